//! Small helpers every subsystem uses, in one place: the shutdown signal, error chains for logs,
//! poison-tolerant lock guards, exponential backoff with jitter, task supervision
//! ([`supervise`]) and the Prometheus text writer ([`prom`]). Nothing here knows about the gateway's features.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::watch;

pub mod prom;
pub mod supervise;

/// Resolves once `shutdown` is true (or its sender is gone, which also means stop).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// An error with its sources, on one line (libraries nest the useful part).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

// A poisoned lock means a panic while holding it. Every structure guarded here stays consistent
// across a panic (updates are single inserts, removes or swaps), so keep serving rather than
// crash every request that touches it.

/// A read guard, also of a poisoned lock.
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A write guard, also of a poisoned lock.
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A mutex guard, also of a poisoned mutex.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Exponential backoff with full jitter: the n-th delay is uniform in
/// `[0, min(cap, base · 2ⁿ)]`, so many pods that lost a dependency at once do not retry in
/// lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base`, never above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(30));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next delay, given `unit` uniform in `[0, 1)`; the ceiling doubles for the next call.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let delay = self.ceiling().mul_f64(unit.clamp(0.0, 1.0));
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// The next delay with fresh jitter ([`random_unit`]).
    pub fn next_jittered(&mut self) -> Duration {
        self.next_delay(random_unit())
    }

    /// Back to `base` (after a healthy run).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A random 32-bit number (0 if the OS has no randomness to give).
pub fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    u32::from_le_bytes(bytes)
}

/// A random UUID v4 (RFC 9562), e.g. the `id` of RIG's own events.
pub fn uuid_v4() -> String {
    use std::fmt::Write as _;
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = n.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{byte:02x}");
    }
    s
}

/// A uniform random number in `[0, 1)` (0.5 if the OS has no randomness to give, which only
/// removes the jitter).
pub fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_chain_names_every_cause() {
        let inner = std::io::Error::other("disk on fire");
        let outer = std::io::Error::new(std::io::ErrorKind::NotFound, inner);
        assert_eq!(error_chain(&outer), "disk on fire");
        #[derive(Debug, thiserror::Error)]
        #[error("reading the cache")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("no space"));
        assert_eq!(error_chain(&e), "reading the cache: no space");
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.next_delay(1.0), Duration::from_millis(100));
        assert_eq!(b.next_delay(1.0), Duration::from_millis(200));
        assert_eq!(b.next_delay(0.5), Duration::from_millis(200));
        for _ in 0..50 {
            assert!(b.next_jittered() <= Duration::from_secs(1));
        }
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
        assert!((0.0..1.0).contains(&random_unit()));
    }
}
