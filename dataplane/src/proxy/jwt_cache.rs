//! A cache of verified JWTs for `secured` proxy endpoints: a client sends the same token with
//! every request, and verifying it (base64, JSON, HMAC or RSA/EC signature) cost more CPU than
//! the rest of the proxy's own work per request (benchmark finding, `e2e/bench/proxy.sh`).
//!
//! Only tokens that passed [`crate::auth::Jwt::verify`] are cached, keyed by the whole token text (so a
//! hit is the same header, payload and signature). A hit re-checks what changes with time or
//! with other state, exactly as a full verification would: `exp`/`nbf` against the clock (with
//! the same leeway) and the session blacklist — a revoked or expired token is verified again in
//! full, which refuses, counts and logs it as usual. Every entry is dropped when the key set is
//! reloaded (`JWT_JWKS`: the verifier's key epoch changed), so a rotated-away key stops being
//! accepted at once; otherwise an entry lives at most [`TTL`]. Refused tokens are never cached. The cache is bounded
//! ([`CAPACITY`] entries per shard, a full shard is emptied), so a client cycling through
//! valid tokens costs memory only up to that bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::Proxy;
use crate::auth::jwt::{Claims, LEEWAY_SECS};

/// How long a verified token is trusted without verifying its signature again.
pub const TTL: Duration = Duration::from_secs(10);
/// Entries per shard.
const CAPACITY: usize = 4096;
/// Shards (by token hash), so the runtime's threads rarely wait for each other.
const SHARDS: usize = 8;

/// What a verification established that a hit needs to re-check.
#[derive(Debug)]
struct Entry {
    /// `exp` (seconds since the Unix epoch).
    exp: u64,
    /// `nbf`, when the token has one.
    nbf: Option<u64>,
    /// The session (`JWT_SESSION_FIELD`), for the blacklist.
    session: Option<Arc<str>>,
    /// When the signature was verified.
    verified: Instant,
    /// The verifier's key epoch then: a reloaded key set (a rotated-away key) invalidates it.
    key_epoch: u64,
}

/// The cache (see the module docs).
#[derive(Debug)]
pub struct JwtCache {
    shards: Vec<Mutex<HashMap<Box<str>, Entry>>>,
}

impl Default for JwtCache {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

/// Whole seconds of a numeric claim (fractions dropped), as the verifier reads them.
fn seconds(claims: &Value, name: &str) -> Option<u64> {
    let v = claims.get(name)?;
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl JwtCache {
    fn shard(&self, token: &str) -> &Mutex<HashMap<Box<str>, Entry>> {
        // FNV-1a over the token's tail (the signature: distinct for distinct tokens).
        let tail = &token.as_bytes()[token.len().saturating_sub(32)..];
        let hash = tail.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        &self.shards[(hash as usize) % SHARDS]
    }

    /// Whether `token` is a valid, non-revoked JWT now: from the cache when it was verified
    /// within [`TTL`] and is still within its validity and not revoked, else by
    /// [`crate::auth::Jwt::verify`] (whose success is cached).
    pub fn verify(&self, proxy: &Proxy, token: &str) -> bool {
        let shard = self.shard(token);
        let now = Instant::now();
        {
            let map = shard.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = map.get(token)
                && now.duration_since(entry.verified) < TTL
                && entry.key_epoch == proxy.jwt.verifier().key_epoch()
            {
                let secs = now_secs();
                let in_time = secs < entry.exp.saturating_add(LEEWAY_SECS)
                    && entry
                        .nbf
                        .is_none_or(|nbf| nbf <= secs.saturating_add(LEEWAY_SECS));
                let revoked = entry
                    .session
                    .as_deref()
                    .is_some_and(|s| proxy.jwt.revoked().is_revoked(s));
                if in_time && !revoked {
                    return true;
                }
            }
        }
        // Not cached, stale, expired or revoked: the full check (which refuses, counts and logs).
        match proxy.jwt.verify(token) {
            Ok(claims) => {
                self.insert(shard, token, &claims, proxy, now);
                true
            }
            Err(_) => {
                shard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(token);
                false
            }
        }
    }

    fn insert(
        &self,
        shard: &Mutex<HashMap<Box<str>, Entry>>,
        token: &str,
        claims: &Claims,
        proxy: &Proxy,
        now: Instant,
    ) {
        // Verified claims always have `exp`; without one there is nothing safe to cache.
        let Some(exp) = claims.exp() else { return };
        let key_epoch = proxy.jwt.verifier().key_epoch();
        let entry = Entry {
            exp,
            nbf: seconds(claims.as_value(), "nbf"),
            session: proxy.jwt.verifier().session_id(claims).map(Arc::from),
            verified: now,
            key_epoch,
        };
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= CAPACITY && !map.contains_key(token) {
            map.clear();
        }
        map.insert(token.into(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_claims_are_read_as_whole_seconds() {
        let claims = serde_json::json!({"exp": 10, "nbf": 5.9, "bad": "x", "neg": -1});
        assert_eq!(seconds(&claims, "exp"), Some(10));
        assert_eq!(seconds(&claims, "nbf"), Some(5));
        assert_eq!(seconds(&claims, "bad"), None);
        assert_eq!(seconds(&claims, "neg"), None);
        assert_eq!(seconds(&claims, "missing"), None);
    }

    #[test]
    fn shards_are_chosen_by_the_token_and_stay_in_range() {
        let cache = JwtCache::default();
        for token in ["", "a", "a.b.c", &"x".repeat(100)] {
            let a = cache.shard(token) as *const _;
            let b = cache.shard(token) as *const _;
            assert_eq!(a, b, "{token}");
        }
    }
}
