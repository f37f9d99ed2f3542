//! Correlated responses (sync-over-async): a proxied request waits for a response that arrives
//! separately — `POST /v3/responses` on the internal port, or a message on the response topics.
//!
//! **Correlation ids** name the process that holds the waiting request:
//! `<owner>.<n>.<nonce>` — the owner (`POD_NAME`), a per-process counter `n` (hex) that keys the
//! pending map, and a random 64-bit nonce (16 hex digits) so a response cannot be delivered to a
//! request by guessing the counter. Every process reads every response, so each one checks the
//! `rig-correlation` header alone (a prefix comparison, no parsing of the body) and drops other
//! processes' responses (`rig_proxy_foreign_responses_total`).
//!
//! **Pending map:** one mutex around a hash map counter → (nonce, oneshot sender), bounded by
//! [`MAX_PENDING`] (beyond it new requests are answered 503). Each entry is removed exactly once:
//! by the response ([`Correlations::deliver`]), by the route timeout ([`Pending::wait`]), or by the
//! [`Pending`] guard's `Drop` when the client went away while waiting (the request future is
//! dropped). Each outcome is counted in `rig_proxy_correlations_total{outcome}`, the open entries
//! in the gauge `rig_proxy_pending_correlations`. A response for an id of this process that has no
//! entry (it timed out, or the client left) is counted in `rig_proxy_late_responses_total`.

use crate::support::prom;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::sync::oneshot;

/// Most requests waiting at once in one process: beyond it new correlated requests get 503
/// (100,000 waiting requests hold a few tens of MiB; more means responses are not coming).
pub const MAX_PENDING: usize = 100_000;

/// The header naming the correlation of a response.
pub const HEADER_CORRELATION: &str = "rig-correlation";
/// The header carrying the response's HTTP status.
pub const HEADER_RESPONSE_CODE: &str = "rig-response-code";

/// A correlated response: what the waiting client gets.
#[derive(Debug)]
pub struct Reply {
    /// The status from `rig-response-code`.
    pub status: StatusCode,
    /// Every other header of the response.
    pub headers: HeaderMap,
    /// The body, as-is.
    pub body: Bytes,
}

/// What became of a delivered response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A waiting request got it.
    Delivered,
    /// The id names another process (its owner).
    Foreign(String),
    /// The id is this process's but nothing waits for it (timed out, client gone, or never issued).
    Late,
    /// The id is not a correlation id.
    Malformed,
}

/// Why a response message or request cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResponseError {
    /// A required header is absent.
    #[error("the header {0} is missing")]
    Missing(&'static str),
    /// `rig-response-code` is not an HTTP status.
    #[error("the header rig-response-code must be an HTTP status code (100-599), got {0:?}")]
    BadCode(String),
}

/// Parse `rig-response-code`.
pub fn parse_code(value: Option<&[u8]>) -> Result<StatusCode, ResponseError> {
    let value = value.ok_or(ResponseError::Missing(HEADER_RESPONSE_CODE))?;
    let text = String::from_utf8_lossy(value);
    text.trim()
        .parse::<u16>()
        .ok()
        .and_then(|n| StatusCode::from_u16(n).ok())
        .filter(|s| (100..600).contains(&s.as_u16()))
        .ok_or_else(|| ResponseError::BadCode(text.into_owned()))
}

/// Copy response headers onto a reply, except the correlation headers, the peer-forwarding
/// marker, `content-length` (recomputed) and hop-by-hop ones;
/// names or values that are not valid HTTP are skipped.
pub fn reply_headers<'a>(pairs: impl Iterator<Item = (&'a str, &'a [u8])>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        let lower = name.to_ascii_lowercase();
        if lower == HEADER_CORRELATION
            || lower == HEADER_RESPONSE_CODE
            || lower == crate::peers::FORWARDED_HEADER
            || matches!(
                lower.as_str(),
                "connection"
                    | "keep-alive"
                    | "transfer-encoding"
                    | "te"
                    | "trailer"
                    | "upgrade"
                    | "host"
                    | "content-length"
            )
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(lower.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(n, v);
        }
    }
    headers
}

/// The pending map and its counters; one per process.
#[derive(Debug, Default)]
pub struct Correlations {
    pending: Mutex<HashMap<u64, (u64, oneshot::Sender<Reply>)>>,
    next: AtomicU64,
    responded: AtomicU64,
    timed_out: AtomicU64,
    abandoned: AtomicU64,
    rejected: AtomicU64,
    late: AtomicU64,
    foreign: AtomicU64,
    invalid: AtomicU64,
}

/// A waiting request's entry. Dropping it before [`Pending::wait`] finished (the client went
/// away) removes the entry and counts it as abandoned.
#[derive(Debug)]
pub struct Pending<'a> {
    correlations: &'a Correlations,
    key: u64,
    /// The correlation id to send along with the request.
    pub id: String,
    rx: oneshot::Receiver<Reply>,
    done: bool,
}

impl Correlations {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (u64, oneshot::Sender<Reply>)>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh correlation id of `owner` that nothing waits for (fire-and-forget requests carry
    /// one too, as RIG's).
    pub fn fresh_id(&self, owner: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format_id(owner, n, nonce())
    }

    /// Register a waiting request of process `owner`; `None` when [`MAX_PENDING`] are waiting
    /// (counted as rejected).
    pub fn register(&self, owner: &str) -> Option<Pending<'_>> {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let nonce = nonce();
        let (tx, rx) = oneshot::channel();
        {
            let mut map = self.map();
            if map.len() >= MAX_PENDING {
                drop(map);
                self.rejected.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            map.insert(key, (nonce, tx));
        }
        Some(Pending {
            correlations: self,
            key,
            id: format_id(owner, key, nonce),
            rx,
            done: false,
        })
    }

    /// Whether correlation `id` belongs to process `owner` (a prefix comparison).
    pub fn is_own(owner: &str, id: &[u8]) -> bool {
        id.len() > owner.len() + 1
            && id.starts_with(owner.as_bytes())
            && id[owner.len()] == b'.'
            && id[owner.len() + 1..].iter().filter(|b| **b == b'.').count() == 1
    }

    /// Hand `reply` to the request waiting on `id`, if it is this process's (`owner`) and still
    /// waiting. Every outcome but `Delivered` is counted.
    pub fn deliver(&self, owner: &str, id: &[u8], reply: Reply) -> Delivery {
        if !Self::is_own(owner, id) {
            let Some(other) = owner_of(id) else {
                self.invalid.fetch_add(1, Ordering::Relaxed);
                return Delivery::Malformed;
            };
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return Delivery::Foreign(other);
        }
        let Some((key, nonce)) = key_of(&id[owner.len() + 1..]) else {
            self.invalid.fetch_add(1, Ordering::Relaxed);
            return Delivery::Malformed;
        };
        let sender = {
            let mut map = self.map();
            match map.get(&key) {
                Some((n, _)) if *n == nonce => map.remove(&key).map(|(_, tx)| tx),
                _ => None,
            }
        };
        match sender {
            Some(tx) => match tx.send(reply) {
                Ok(()) => {
                    self.responded.fetch_add(1, Ordering::Relaxed);
                    Delivery::Delivered
                }
                Err(_) => {
                    // The waiter was dropped between our removal and the send.
                    self.late.fetch_add(1, Ordering::Relaxed);
                    Delivery::Late
                }
            },
            None => {
                self.late.fetch_add(1, Ordering::Relaxed);
                Delivery::Late
            }
        }
    }

    /// Count a response for another process's correlation (dropped by the header alone).
    pub fn count_foreign(&self) {
        self.foreign.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a response that could not be used (missing or bad headers).
    pub fn count_invalid(&self) {
        self.invalid.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests waiting now.
    pub fn pending(&self) -> usize {
        self.map().len()
    }

    /// Late responses so far (for tests and metrics).
    pub fn late(&self) -> u64 {
        self.late.load(Ordering::Relaxed)
    }

    /// Append the correlation metrics to a `/metrics` text.
    pub fn render(&self, out: &mut String) {
        prom::gauge(
            out,
            "rig_proxy_pending_correlations",
            "Proxied requests waiting for a correlated response.",
            self.pending(),
        );
        prom::family(
            out,
            "rig_proxy_correlations_total",
            prom::Kind::Counter,
            "Correlated requests by outcome.",
        );
        for (outcome, counter) in [
            ("responded", &self.responded),
            ("timed_out", &self.timed_out),
            ("abandoned", &self.abandoned),
            ("rejected", &self.rejected),
        ] {
            prom::sample(
                out,
                "rig_proxy_correlations_total",
                &[("outcome", outcome)],
                counter.load(Ordering::Relaxed),
            );
        }
        for (name, help, counter) in [
            (
                "rig_proxy_late_responses_total",
                "Responses for this process's correlations that nothing waited for any more (dropped).",
                &self.late,
            ),
            (
                "rig_proxy_foreign_responses_total",
                "Responses for other processes' correlations (dropped by the header alone).",
                &self.foreign,
            ),
            (
                "rig_proxy_invalid_responses_total",
                "Responses without a valid rig-correlation or rig-response-code (dropped).",
                &self.invalid,
            ),
        ] {
            prom::counter(out, name, help, counter.load(Ordering::Relaxed));
        }
    }
}

impl Pending<'_> {
    /// Remove the entry without waiting (the target answered directly); not counted.
    pub fn cancel(mut self) {
        self.done = true;
        self.correlations.map().remove(&self.key);
    }

    /// Wait up to `timeout` for the response; `None` on timeout (the entry is removed and
    /// counted).
    pub async fn wait(mut self, timeout: Duration) -> Option<Reply> {
        let outcome = tokio::time::timeout(timeout, &mut self.rx).await;
        self.done = true;
        match outcome {
            Ok(Ok(reply)) => Some(reply),
            Ok(Err(_)) => None, // the sender is only dropped after removal: not reached
            Err(_) => {
                let removed = self.correlations.map().remove(&self.key).is_some();
                if removed {
                    self.correlations.timed_out.fetch_add(1, Ordering::Relaxed);
                    None
                } else {
                    // Delivered just as the timer fired: take it.
                    self.rx.try_recv().ok()
                }
            }
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.correlations.map().remove(&self.key).is_some() {
            self.correlations.abandoned.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(correlation = %self.id, "the client left while waiting for a correlated response");
        }
    }
}

fn format_id(owner: &str, key: u64, nonce: u64) -> String {
    format!("{owner}.{key:x}.{nonce:016x}")
}

fn nonce() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: fall back to the clock (ids stay unique through the counter).
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    }
    u64::from_le_bytes(bytes)
}

/// `<n>.<nonce>` → (n, nonce).
fn key_of(rest: &[u8]) -> Option<(u64, u64)> {
    let rest = std::str::from_utf8(rest).ok()?;
    let (key, nonce) = rest.split_once('.')?;
    Some((
        u64::from_str_radix(key, 16).ok()?,
        u64::from_str_radix(nonce, 16).ok()?,
    ))
}

/// The owner named by a correlation id (everything before the last two `.` segments).
pub fn owner_of(id: &[u8]) -> Option<String> {
    let id = std::str::from_utf8(id).ok()?;
    let (head, nonce) = id.rsplit_once('.')?;
    let (owner, key) = head.rsplit_once('.')?;
    key_of(format!("{key}.{nonce}").as_bytes())?;
    (!owner.is_empty()).then(|| owner.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16) -> Reply {
        Reply {
            status: StatusCode::from_u16(code).expect("status"),
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"x"),
        }
    }

    #[tokio::test]
    async fn delivered_timed_out_abandoned_late_and_foreign() {
        let c = Correlations::default();
        let p = c.register("pod-a").expect("room");
        assert!(Correlations::is_own("pod-a", p.id.as_bytes()));
        assert!(!Correlations::is_own("pod", p.id.as_bytes()));
        assert_eq!(owner_of(p.id.as_bytes()).as_deref(), Some("pod-a"));
        let id = p.id.clone();
        assert_eq!(
            c.deliver("pod-a", id.as_bytes(), reply(201)),
            Delivery::Delivered
        );
        let got = p.wait(Duration::from_secs(1)).await.expect("reply");
        assert_eq!(got.status, StatusCode::CREATED);
        assert_eq!(c.pending(), 0);
        // The same id again: late.
        assert_eq!(
            c.deliver("pod-a", id.as_bytes(), reply(200)),
            Delivery::Late
        );

        let p = c.register("pod-a").expect("room");
        assert!(p.wait(Duration::from_millis(1)).await.is_none());
        assert_eq!(c.pending(), 0);

        let p = c.register("pod-a").expect("room");
        let id = p.id.clone();
        drop(p);
        assert_eq!(c.pending(), 0);
        assert_eq!(
            c.deliver("pod-a", id.as_bytes(), reply(200)),
            Delivery::Late
        );
        assert_eq!(c.late(), 2);

        // A wrong nonce does not deliver.
        let p = c.register("pod-a").expect("room");
        let forged = format!("{}0", &p.id[..p.id.len() - 1]);
        let forged = if forged == p.id {
            format!("{}1", &p.id[..p.id.len() - 1])
        } else {
            forged
        };
        assert_eq!(
            c.deliver("pod-a", forged.as_bytes(), reply(200)),
            Delivery::Late
        );
        assert_eq!(c.pending(), 1);
        drop(p);

        assert_eq!(
            c.deliver("pod-a", b"pod-b.1.00000000000000ff", reply(200)),
            Delivery::Foreign("pod-b".into())
        );
        assert_eq!(
            c.deliver("pod-a", b"garbage", reply(200)),
            Delivery::Malformed
        );
        let mut text = String::new();
        c.render(&mut text);
        assert!(text.contains("rig_proxy_correlations_total{outcome=\"abandoned\"} 2"));
        assert!(text.contains("rig_proxy_correlations_total{outcome=\"timed_out\"} 1"));
        assert!(text.contains("rig_proxy_foreign_responses_total 1"));
    }

    #[test]
    fn response_codes() {
        assert_eq!(parse_code(Some(b"201")), Ok(StatusCode::CREATED));
        assert!(matches!(
            parse_code(Some(b"abc201")),
            Err(ResponseError::BadCode(_))
        ));
        assert!(matches!(
            parse_code(Some(b"99")),
            Err(ResponseError::BadCode(_))
        ));
        assert_eq!(
            parse_code(None),
            Err(ResponseError::Missing(HEADER_RESPONSE_CODE))
        );
    }
}
