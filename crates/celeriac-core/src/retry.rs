//! Retry timing: exponential backoff with full jitter and a cap.

use rand::Rng;
use std::time::Duration;

/// How long to wait before the next attempt.
///
/// The delay before retry `n` (1 for the first retry) is drawn uniformly from
/// `[0, min(cap, base * 2^(n-1))]` ("full jitter"), which spreads retries of jobs that
/// failed together instead of bringing them back in one wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry's upper bound.
    pub base: Duration,
    /// No delay is longer than this.
    pub cap: Duration,
    /// Draw the delay at random below the bound (true) or wait the bound itself (false).
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(600),
            jitter: true,
        }
    }
}

impl Backoff {
    /// The upper bound of the delay before retry `retry` (1-based).
    pub fn bound(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(62);
        let factor = 1u64 << exp;
        let base_ms = self.base.as_millis().min(u64::MAX as u128) as u64;
        let ms = base_ms.saturating_mul(factor);
        Duration::from_millis(ms).min(self.cap)
    }

    /// The delay before retry `retry` (1-based), drawn with `rng` when jitter is on.
    pub fn delay_with<R: Rng + ?Sized>(&self, retry: u32, rng: &mut R) -> Duration {
        let bound = self.bound(retry);
        if !self.jitter || bound.is_zero() {
            return bound;
        }
        let ms = bound.as_millis() as u64;
        Duration::from_millis(rng.random_range(0..=ms))
    }

    /// The delay before retry `retry` (1-based), with the thread's random generator.
    pub fn delay(&self, retry: u32) -> Duration {
        self.delay_with(retry, &mut rand::rng())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_doubles_and_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            jitter: false,
        };
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(5), Duration::from_secs(1));
        assert_eq!(b.delay(500), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_bound_and_varies() {
        let b = Backoff {
            base: Duration::from_millis(1000),
            cap: Duration::from_secs(60),
            jitter: true,
        };
        let draws: Vec<_> = (0..200).map(|_| b.delay(3)).collect();
        assert!(draws.iter().all(|d| *d <= Duration::from_secs(4)));
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(distinct.len() > 50, "full jitter should spread delays");
    }
}
