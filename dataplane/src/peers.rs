//! The other data-plane processes, and forwarding a request about a connection to the process that
//! holds it.
//!
//! A connection token names its owner (the pod name). The Service in front of the pods spreads
//! requests, so a subscription update (`PUT .../<token>/subscriptions`) often lands on a pod that
//! does not hold the connection. That pod forwards the request — method, end-to-end headers, body —
//! to the owner's internal API, `PUT /v3/connections/<token>/subscriptions`, and relays the answer.
//! The owner handles it locally and never forwards again, so a misconfiguration cannot loop. RIG
//! did this with Erlang distribution; here it is one HTTP hop.
//!
//! Peers come from `RIG_PEERS`, comma-separated entries of the peers' internal API:
//! - `<owner>=http://<host>:<port>` for one process;
//! - `*=http://{owner}.<headless-service>:<port>` for all others, `{owner}` being replaced by the
//!   owner's name (a StatefulSet behind a headless Service gives each pod such a DNS name).
//!
//! Exact entries win over the pattern. An owner that matches neither is unknown: its connections
//! cannot be reached from here (answered 410). The client is pooled HTTP/1.1 with a timeout per
//! request; failures are answered 503 (unreachable), 504 (timeout) or 502 (a broken answer), counted
//! in `rig_peer_forward_failures_total` and logged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use thiserror::Error;

use crate::http::Body;
use crate::metrics::Metrics;

/// Where `{owner}` goes in a `*=` pattern entry.
const OWNER_PLACEHOLDER: &str = "{owner}";
/// Largest answer relayed from a peer. Answers are short texts; anything larger is broken.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Headers that describe one hop, not the request (RFC 9110 §7.6.1), plus those the client
/// recomputes.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Marks a request one process forwarded to another, so it is never forwarded again.
pub const FORWARDED_HEADER: &str = "rig-forwarded-by-peer";

/// The path of the internal endpoint that replaces a connection's subscriptions on its owner.
pub fn internal_subscriptions_path(token: &str) -> String {
    format!("/v3/connections/{token}/subscriptions")
}

/// `RIG_PEERS`, parsed: where each other process's internal API is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerMap {
    exact: BTreeMap<String, String>,
    pattern: Option<String>,
}

impl PeerMap {
    /// Parse `RIG_PEERS` (module docs). Empty means no peers. The error says what is wrong.
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        let mut map = Self::default();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (owner, url) = entry
                .split_once('=')
                .ok_or("expected comma-separated owner=http://host:port entries")?;
            let (owner, url) = (owner.trim(), url.trim().trim_end_matches('/'));
            if owner.is_empty() {
                return Err("an entry has an empty owner name");
            }
            let probe = url.replace(OWNER_PLACEHOLDER, "owner");
            let uri: Uri = probe.parse().map_err(|_| "an entry's URL does not parse")?;
            if !uri
                .scheme_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("http"))
                || uri.authority().is_none()
                || uri.query().is_some()
            {
                return Err("an entry's URL is not an absolute http:// URL without a query");
            }
            if owner == "*" {
                if !url.contains(OWNER_PLACEHOLDER) {
                    return Err("the * entry's URL must contain {owner}");
                }
                if map.pattern.replace(url.to_owned()).is_some() {
                    return Err("more than one * entry");
                }
            } else if map.exact.insert(owner.to_owned(), url.to_owned()).is_some() {
                return Err("an owner is listed twice");
            }
        }
        Ok(map)
    }

    /// Whether no peer is configured.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.pattern.is_none()
    }

    /// The base URL of `owner`'s internal API, if it is known.
    pub fn base(&self, owner: &str) -> Option<String> {
        if let Some(url) = self.exact.get(owner) {
            return Some(url.clone());
        }
        // The owner comes from an authenticated token, but it still must not change the URL's
        // shape: only DNS-label characters go into a host name.
        let label = !owner.is_empty()
            && owner.len() <= 63
            && owner
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let pattern = self.pattern.as_ref()?;
        label.then(|| pattern.replace(OWNER_PLACEHOLDER, owner))
    }
}

/// Why a request could not be handled by its owner. `Display` is the answer for the client.
#[derive(Debug, Error)]
pub enum ForwardError {
    /// The owner is not among the peers (410: its connections cannot be reached from here).
    #[error(
        "Connection no longer exists: it belongs to process {owner:?}, which this process does not \
         know (RIG_PEERS)."
    )]
    UnknownOwner {
        /// The owner named by the token.
        owner: String,
    },
    /// The owner could not be connected to (503).
    #[error("The process holding this connection ({owner}) is unreachable.")]
    Unreachable {
        /// The owner.
        owner: String,
        /// The client's error.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The owner did not answer in time (504).
    #[error("The process holding this connection ({owner}) did not answer in time.")]
    Timeout {
        /// The owner.
        owner: String,
    },
    /// The owner's answer was broken, or the request could not be sent whole (502).
    #[error("The process holding this connection ({owner}) sent no usable answer.")]
    BadAnswer {
        /// The owner.
        owner: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ForwardError {
    /// The status for the client.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownOwner { .. } => StatusCode::GONE,
            Self::Unreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BadAnswer { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

/// The peers and the HTTP client that reaches them.
#[derive(Debug)]
pub struct Peers {
    map: PeerMap,
    timeout: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
    metrics: Arc<Metrics>,
}

impl Peers {
    /// Peers from `map`; a forwarded request gives up after `timeout`.
    pub fn new(map: PeerMap, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Self {
            map,
            timeout,
            client,
            metrics,
        }
    }

    /// Whether `owner` is a known peer.
    pub fn knows(&self, owner: &str) -> bool {
        self.map.base(owner).is_some()
    }

    /// The error for a connection whose owner is not a known peer, counted and logged like a failed
    /// forward.
    pub fn unknown_owner(&self, owner: &str) -> ForwardError {
        let error = ForwardError::UnknownOwner {
            owner: owner.to_owned(),
        };
        self.metrics
            .peer_forward_failures
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%owner, "a subscription update names a connection of an unknown process; check RIG_PEERS");
        error
    }

    /// Send a subscription update for connection `token` (held by `owner`) to the owner, with the
    /// original request's method, end-to-end headers and `body`; the owner's answer (status,
    /// content type, body) comes back. Counts and logs failures.
    pub async fn forward_subscriptions(
        &self,
        owner: &str,
        token: &str,
        parts: &Parts,
        body: Bytes,
    ) -> Result<Response<Body>, ForwardError> {
        self.metrics.peer_forwards.fetch_add(1, Ordering::Relaxed);
        let result = self
            .forward(owner, &internal_subscriptions_path(token), parts, body)
            .await;
        if let Err(error) = &result {
            self.metrics
                .peer_forward_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                %owner,
                %error,
                source = ?std::error::Error::source(error),
                "cannot forward a subscription update to the connection's owner"
            );
        }
        result
    }

    /// Send a correlated response (`POST /v3/responses`) to the process holding the waiting
    /// request, marked with [`FORWARDED_HEADER`] so it is never forwarded again; the owner's answer
    /// comes back. Counts and logs failures.
    pub async fn forward_response(
        &self,
        owner: &str,
        parts: &Parts,
        body: Bytes,
    ) -> Result<Response<Body>, ForwardError> {
        self.metrics.peer_forwards.fetch_add(1, Ordering::Relaxed);
        let mut parts = parts.clone();
        parts
            .headers
            .insert(FORWARDED_HEADER, HeaderValue::from_static("1"));
        let result = self.forward(owner, "/v3/responses", &parts, body).await;
        if let Err(error) = &result {
            self.metrics
                .peer_forward_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%owner, %error, "cannot forward a correlated response to the process holding the request");
        }
        result
    }

    async fn forward(
        &self,
        owner: &str,
        path: &str,
        parts: &Parts,
        body: Bytes,
    ) -> Result<Response<Body>, ForwardError> {
        let bad = |source: Box<dyn std::error::Error + Send + Sync>| ForwardError::BadAnswer {
            owner: owner.to_owned(),
            source,
        };
        let base = self
            .map
            .base(owner)
            .ok_or_else(|| ForwardError::UnknownOwner {
                owner: owner.to_owned(),
            })?;
        let url = format!("{base}{path}");
        let mut req = Request::builder()
            .method(parts.method.clone())
            .uri(url)
            .body(Full::new(body))
            .map_err(|e| bad(e.into()))?;
        for (name, value) in &parts.headers {
            if !is_hop_by_hop(name, &parts.headers) {
                req.headers_mut().append(name.clone(), value.clone());
            }
        }
        let res = tokio::time::timeout(self.timeout, async {
            let res = self.client.request(req).await.map_err(|source| {
                if source.is_connect() {
                    ForwardError::Unreachable {
                        owner: owner.to_owned(),
                        source,
                    }
                } else {
                    bad(source.into())
                }
            })?;
            let (head, body) = res.into_parts();
            let bytes = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(bad)?
                .to_bytes();
            Ok((head, bytes))
        })
        .await
        .map_err(|_| ForwardError::Timeout {
            owner: owner.to_owned(),
        })?;
        let (head, bytes) = res?;
        let mut answer = Response::new(crate::http::full(bytes));
        *answer.status_mut() = head.status;
        if let Some(content_type) = head.headers.get(header::CONTENT_TYPE) {
            answer
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type.clone());
        }
        Ok(answer)
    }
}

/// Whether `name` must not be forwarded: a hop-by-hop header, one named by `connection`, or
/// `content-length` (recomputed from the body).
fn is_hop_by_hop(name: &HeaderName, headers: &http::HeaderMap) -> bool {
    if HOP_BY_HOP.contains(&name.as_str()) || name == header::CONTENT_LENGTH {
        return true;
    }
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v: &HeaderValue| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|listed| listed.trim().eq_ignore_ascii_case(name.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_entries_and_the_pattern_resolve_owners() {
        let map = PeerMap::parse(
            " rig-0=http://10.0.0.1:4010/ , *=http://{owner}.rig-headless.ns.svc:4010,rig-1=http://h:1",
        )
        .expect("valid");
        assert_eq!(map.base("rig-0").as_deref(), Some("http://10.0.0.1:4010"));
        assert_eq!(map.base("rig-1").as_deref(), Some("http://h:1"));
        assert_eq!(
            map.base("rig-7").as_deref(),
            Some("http://rig-7.rig-headless.ns.svc:4010")
        );
        // Not a DNS label: never substituted into a host name.
        assert_eq!(map.base("evil.com/x"), None);
        assert_eq!(map.base("Upper"), None);
    }

    #[test]
    fn without_a_pattern_unknown_owners_are_unknown() {
        let map = PeerMap::parse("a=http://127.0.0.1:1").expect("valid");
        assert!(map.base("b").is_none());
        assert!(PeerMap::parse("").expect("empty").is_empty());
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in [
            "a",
            "=http://h:1",
            "a=h:1",
            "a=https://h:1",
            "a=http://h:1?x=1",
            "*=http://h:1",
            "a=http://h:1,a=http://h:2",
            "*=http://{owner}:1,*=http://{owner}:2",
        ] {
            assert!(PeerMap::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_are_not_forwarded() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("x-private"));
        let private = HeaderName::from_static("x-private");
        assert!(is_hop_by_hop(&private, &headers));
        assert!(is_hop_by_hop(&header::TRANSFER_ENCODING, &headers));
        assert!(is_hop_by_hop(&header::HOST, &headers));
        assert!(!is_hop_by_hop(&header::AUTHORIZATION, &headers));
        assert!(!is_hop_by_hop(&header::CONTENT_TYPE, &headers));
    }

    #[tokio::test]
    async fn an_unknown_owner_is_gone_and_a_dead_peer_is_unavailable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let map = PeerMap::parse(&format!("dead=http://127.0.0.1:{port}")).expect("valid");
        let metrics = Arc::new(Metrics::default());
        let peers = Peers::new(map, Duration::from_secs(5), metrics.clone());
        let (parts, ()) = Request::put("/x").body(()).expect("request").into_parts();
        let unknown = peers
            .forward_subscriptions("other", "tok", &parts, Bytes::new())
            .await
            .expect_err("unknown");
        assert_eq!(unknown.status(), StatusCode::GONE);
        let dead = peers
            .forward_subscriptions("dead", "tok", &parts, Bytes::new())
            .await
            .expect_err("dead");
        assert_eq!(dead.status(), StatusCode::SERVICE_UNAVAILABLE, "{dead:?}");
        assert_eq!(metrics.peer_forward_failures.load(Ordering::Relaxed), 2);
    }
}
