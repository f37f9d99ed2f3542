//! `MAX_CONNECTIONS_PER_MINUTE`: a fixed one-minute window over all transports, per process, as in
//! RIG. Lock-free: one atomic for the window start, one for the count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(60);

/// Counts connection attempts per fixed one-minute window.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u64,
    origin: Instant,
    window: AtomicU64,
    count: AtomicU64,
}

impl RateLimiter {
    /// Allow `limit` new connections per minute (0 = no limit).
    pub fn per_minute(limit: u64) -> Self {
        Self {
            limit,
            origin: Instant::now(),
            window: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Take one slot; `false` when this minute's budget is spent.
    pub fn try_acquire(&self) -> bool {
        if self.limit == 0 {
            return true;
        }
        let now = (self.origin.elapsed().as_secs()) / WINDOW.as_secs();
        let current = self.window.load(Ordering::Acquire);
        if now != current
            && self
                .window
                .compare_exchange(current, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.count.store(0, Ordering::Release);
        }
        self.count.fetch_add(1, Ordering::AcqRel) < self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allows_the_budget_then_refuses_until_the_next_minute() {
        let limiter = RateLimiter::per_minute(3);
        assert!((0..3).all(|_| limiter.try_acquire()));
        assert!(!limiter.try_acquire());
        tokio::time::advance(WINDOW).await;
        assert!(limiter.try_acquire());
    }

    #[test]
    fn zero_means_unlimited() {
        let limiter = RateLimiter::per_minute(0);
        assert!((0..10_000).all(|_| limiter.try_acquire()));
    }
}
