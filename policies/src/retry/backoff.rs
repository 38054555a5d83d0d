//! [`Backoff`]: exponential backoff with full jitter, and its [`Jitter`] source.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long to wait before each retry.
///
/// Before retry `n` (1 for the first), the ceiling is `min(max, base · 2ⁿ⁻¹)` and the wait is
/// drawn uniformly from `[0, ceiling)` ("full jitter"): callers that failed together do not
/// retry together. With [`Jitter::none`] the wait is the ceiling itself.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: Jitter,
}

impl Backoff {
    /// Backoff from `base`, doubling up to `max`, with full jitter.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max: max.max(base), jitter: Jitter::full() }
    }

    /// Replaces the jitter source.
    #[must_use]
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The longest wait before retry `retry` (1-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// The wait before retry `retry` (1-based).
    pub fn delay(&self, retry: u32) -> Duration {
        self.ceiling(retry).mul_f64(self.jitter.sample())
    }
}

/// Where the random fraction of a jittered wait comes from.
///
/// [`full`](Self::full) draws from a per-process random hash keyed by a shared counter, so
/// that clones (one per call) draw different numbers. [`none`](Self::none) always gives 1:
/// plain exponential backoff, for tests and for operators who want predictable waits.
#[derive(Clone)]
pub struct Jitter(Option<Arc<Source>>);

struct Source {
    keys: RandomState,
    counter: AtomicU64,
}

impl Jitter {
    /// Uniform random fractions in `[0, 1)`.
    pub fn full() -> Self {
        Self(Some(Arc::new(Source { keys: RandomState::new(), counter: AtomicU64::new(0) })))
    }

    /// Always 1: no jitter.
    pub fn none() -> Self {
        Self(None)
    }

    /// The next fraction: in `[0, 1)`, or exactly 1 without jitter.
    pub fn sample(&self) -> f64 {
        match &self.0 {
            None => 1.0,
            Some(source) => {
                let mut hasher = source.keys.build_hasher();
                hasher.write_u64(source.counter.fetch_add(1, Ordering::Relaxed));
                // The top 53 bits, as a fraction of 2^53: uniform in [0, 1).
                (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
            }
        }
    }
}

impl fmt::Debug for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Jitter::full" } else { "Jitter::none" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_max() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let ceilings: Vec<u128> = (1..=6).map(|n| backoff.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_millis(1000));
    }

    #[test]
    fn full_jitter_stays_below_the_ceiling_and_varies() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let delays: Vec<Duration> = (0..200).map(|_| backoff.delay(3)).collect();
        assert!(delays.iter().all(|d| *d < backoff.ceiling(3)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "only {} distinct waits", distinct.len());
        // Clones share the source, so two clones do not replay the same waits.
        let clone = backoff.clone();
        assert_ne!(
            (0..8).map(|_| backoff.delay(3)).collect::<Vec<_>>(),
            (0..8).map(|_| clone.delay(3)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn no_jitter_waits_the_ceiling() {
        let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1))
            .with_jitter(Jitter::none());
        assert_eq!(backoff.delay(1), Duration::from_millis(50));
        assert_eq!(backoff.delay(3), Duration::from_millis(200));
    }
}
