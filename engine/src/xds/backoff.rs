//! Reconnect delays: exponential backoff with full jitter (each delay is
//! uniform in `[0, min(cap, base * 2^n)]`), so a fleet of proxies that lost the
//! same control plane does not knock on its door in lockstep.

use std::time::Duration;

pub const BASE: Duration = Duration::from_millis(100);
/// Proxies come back within this after a control-plane restart; the control
/// plane keeps restored nodes longer than this (contract: max(grace, 45 s)).
pub const CAP: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BASE, CAP)
    }
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The ceiling of the next delay (before jitter).
    pub fn ceiling(&self) -> Duration {
        // 2^20 * 100 ms is far past any sane cap; stop doubling there.
        let factor = 1u32 << self.attempt.min(20);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next attempt; each call doubles the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let ms = ceiling.as_millis().min(u128::from(u64::MAX)) as u64;
        Duration::from_millis(fastrand::u64(0..=ms))
    }

    /// After a healthy stream: start again from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let mut b = Backoff::default();
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay();
        }
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]
        );
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), CAP);
    }

    #[test]
    fn delays_stay_within_zero_and_the_ceiling_and_are_jittered() {
        let mut b = Backoff::default();
        for _ in 0..200 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(d <= ceiling, "{d:?} > {ceiling:?}");
            assert!(d <= CAP);
        }
        // Full jitter: at the cap, 50 draws are not all the same.
        let draws: std::collections::HashSet<_> = (0..50).map(|_| b.next_delay()).collect();
        assert!(draws.len() > 10, "{draws:?}");
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::default();
        for _ in 0..8 {
            b.next_delay();
        }
        b.reset();
        assert_eq!(b.ceiling(), BASE);
        assert!(b.next_delay() <= BASE);
        assert_eq!(b.attempts(), 1);
    }
}
