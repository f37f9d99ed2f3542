//! The HTTP target: forward a request to a backend and stream its answer back.
//!
//! Bodies are streamed both ways (never buffered whole): the request body goes through a
//! [`Limited`] wrapper that ends the upload with 413 once it exceeds `PROXY_MAX_BODY_BYTES` (or at
//! once when `content-length` says so). Headers: hop-by-hop ones are dropped (both ways), the
//! route's added headers set, `host` rewritten to the target, `forwarded: for=…;by=…` replaces
//! any client value, and a W3C `traceparent` is passed through when valid or generated. The
//! route's timeout bounds the wait for the response head (504); an unreachable target answers 502
//! `Bad gateway.`.
//!
//! Upstream connections are pooled by two clients ([`Upstream`]): the default one speaks
//! HTTP/1.1 (keep-alive) to `http://` targets and TLS (rustls; system roots plus
//! `PROXY_TLS_CA_FILE`) to `https://` targets, offering ALPN `h2` and `http/1.1`, so a TLS backend
//! that speaks HTTP/2 gets one multiplexed connection. Routes marked `http2` use the other client,
//! HTTP/2 only: prior knowledge (h2c) on `http://`, ALPN `h2` on `https://` (gRPC-style backends).
//! A request body that stalls longer than `PROXY_BODY_IDLE_TIMEOUT_MS` aborts the upstream request
//! ([`IdleBody`]): 408 while no response has started, otherwise the upstream exchange is cut off;
//! counted in `rig_proxy_request_body_timeouts_total`.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;

use super::metrics::Status;
use super::pool::{Lease, Pool, StreamPool};
use super::routes::{Api, Endpoint, HttpTarget};
use crate::http::{Body, text};

/// How long an idle upstream connection stays pooled: below the usual 60 s+ server keep-alive,
/// so the pool rarely hands out a connection the backend is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1, plus the legacy
/// `proxy-connection` and `keep-alive`, and HTTP/2's `http2-settings`).
/// Typed once: removing by `&str` would parse the name on every request.
pub(super) static HOP_BY_HOP: [HeaderName; 8] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::TE,
    http::header::TRAILER,
    HeaderName::from_static("http2-settings"),
];

/// `traceparent` / `tracestate` (W3C trace context), typed once.
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The request body type sent upstream.
pub type UpBody = IdleBody<Limited<Incoming>>;

/// The pooled clients for HTTP targets.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// HTTP/1.1 on `http://` (connections driven by the requests, see [`super::pool`]).
    pool: Pool,
    /// Plain TCP connections to `http://` targets for the direct path ([`super::fast`]).
    pub streams: StreamPool,
    /// TLS with ALPN `h2`/`http/1.1` on `https://`.
    client: Client<HttpsConnector<HttpConnector>, UpBody>,
    /// HTTP/2 only (routes marked `http2`): h2c prior knowledge, or TLS with ALPN `h2`.
    h2: Client<HttpsConnector<HttpConnector>, UpBody>,
    /// `PROXY_BODY_IDLE_TIMEOUT_MS`.
    body_idle: Duration,
    /// `rig_proxy_request_body_timeouts_total`.
    body_timeouts: Arc<AtomicU64>,
}

impl Upstream {
    /// The clients: TLS trusts the system roots plus `extra_roots` (`PROXY_TLS_CA_FILE`); a
    /// request body stalling for `body_idle` aborts its upstream request.
    pub fn new(extra_roots: &[CertificateDer<'static>], body_idle: Duration) -> Self {
        let tls = tls_config(extra_roots);
        let connector = || {
            let mut http = HttpConnector::new();
            http.set_nodelay(true);
            http.set_connect_timeout(Some(Duration::from_secs(5)));
            // The TLS layer handles `https://`; the TCP layer must accept that scheme too.
            http.enforce_http(false);
            http
        };
        let any_version = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(connector());
        let h2_only = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http2()
            .wrap_connector(connector());
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(any_version);
        let h2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http2_only(true)
            .build(h2_only);
        Self {
            pool: Pool::new(POOL_IDLE_TIMEOUT),
            streams: StreamPool::new(POOL_IDLE_TIMEOUT),
            client,
            h2,
            body_idle,
            body_timeouts: Arc::default(),
        }
    }

    /// Request bodies aborted for stalling (`rig_proxy_request_body_timeouts_total`).
    pub fn body_timeouts(&self) -> u64 {
        self.body_timeouts.load(Ordering::Relaxed)
    }
}

/// The TLS settings of upstream connections: rustls' defaults, the system roots (a root that
/// does not parse is skipped and logged) and the extra roots.
fn tls_config(extra_roots: &[CertificateDer<'static>]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "could not load system root certificates for https:// proxy targets");
    }
    let (system, _) = roots.add_parsable_certificates(native.certs);
    let (extra, skipped) = roots.add_parsable_certificates(extra_roots.iter().cloned());
    tracing::debug!(
        system,
        extra,
        skipped,
        "root certificates for https:// proxy targets"
    );
    // The workspace builds rustls with ring only, so its provider is the process default.
    rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// What a forward needs from the proxy's settings.
#[derive(Debug)]
pub struct Settings<'a> {
    /// The pooled client.
    pub upstream: &'a Upstream,
    /// `PROXY_MAX_BODY_BYTES`.
    pub max_body: u64,
    /// Our address as a `forwarded` node ([`by_node`]), for `forwarded: by=`.
    pub by: &'a str,
    /// Where latency is recorded.
    pub metrics: &'a super::metrics::ProxyMetrics,
    /// A correlation id to add to the query as `correlation=<id>` (correlated responses).
    pub correlation: Option<&'a str>,
}

/// Forward `req`, matched by `endpoint` of `api`, to `target`; `peer` is the client.
pub async fn forward(
    settings: &Settings<'_>,
    api: &Api,
    endpoint: &Endpoint,
    target: &HttpTarget,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    if content_length(&parts.headers).is_some_and(|len| len > settings.max_body) {
        endpoint.counters.count(Status::BadRequest);
        return too_large(settings.max_body);
    }
    let path = endpoint.rewrite(parts.uri.path());
    let path_and_query = match (parts.uri.query(), settings.correlation) {
        (Some(q), Some(c)) => format!("{path}?{q}&correlation={c}"),
        (None, Some(c)) => format!("{path}?correlation={c}"),
        (Some(q), None) => format!("{path}?{q}"),
        (None, None) => path,
    };
    // Our own pool speaks origin-form (`/path?query`); the other clients want the absolute URI.
    let pooled = target.scheme == http::uri::Scheme::HTTP && !target.http2;
    let uri = if pooled {
        Uri::builder().path_and_query(path_and_query).build()
    } else {
        Uri::builder()
            .scheme(target.scheme.clone())
            .authority(target.authority.clone())
            .path_and_query(path_and_query)
            .build()
    };
    let uri = match uri {
        Ok(uri) => uri,
        Err(error) => {
            // The rewritten path is not a valid URI path: a route configuration problem.
            tracing::warn!(api = %api.shared.id, endpoint = %endpoint.id, %error, "the rewritten path is not a valid URI");
            endpoint.counters.count(Status::Unreachable);
            return text(StatusCode::BAD_GATEWAY, "Bad gateway.");
        }
    };
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    if endpoint.add_headers {
        for (name, value) in &api.shared.add_headers {
            headers.insert(name.clone(), value.clone());
        }
    }
    headers.insert(http::header::HOST, target.host.clone());
    headers.insert(http::header::FORWARDED, forwarded(peer.ip(), settings.by));
    ensure_traceparent(headers);
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let limit = usize::try_from(settings.max_body).unwrap_or(usize::MAX);
    let upstream = settings.upstream;
    let fate = Arc::new(AtomicU8::new(FATE_NONE));
    let body = IdleBody::new(
        Limited::new(body, limit),
        upstream.body_idle,
        upstream.body_timeouts.clone(),
        fate.clone(),
    );
    let upstream_req = Request::from_parts(parts, body);
    let started = Instant::now();
    let exchange = async {
        if pooled {
            upstream
                .pool
                .send(&target.authority, &target.pool_key, upstream_req)
                .await
                .map(|(res, lease)| (res, Some(lease)))
                .map_err(super::pool::PoolError::into_boxed)
        } else {
            let client = if target.http2 {
                &upstream.h2
            } else {
                &upstream.client
            };
            client
                .request(upstream_req)
                .await
                .map(|res| (res, None))
                .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        }
    };
    let answer = tokio::time::timeout(api.shared.timeout, exchange).await;
    // Over HTTP/2 a body error only resets the stream, so the client's error does not carry it.
    let fate = fate.load(Ordering::Relaxed);
    match answer {
        Err(_) => {
            tracing::info!(api = %api.shared.id, endpoint = %endpoint.id, timeout_ms = api.shared.timeout.as_millis() as u64, "proxy target did not answer in time");
            endpoint.counters.count(Status::ResponseTimeout);
            text(StatusCode::GATEWAY_TIMEOUT, "Gateway timeout.")
        }
        Ok(Err(error)) if fate == FATE_TOO_LARGE || caused_by::<LengthLimitError>(&*error) => {
            endpoint.counters.count(Status::BadRequest);
            too_large(settings.max_body)
        }
        Ok(Err(error)) if fate == FATE_IDLE || caused_by::<BodyIdle>(&*error) => {
            // Logged and counted by `IdleBody`, which also sees stalls after the response head.
            endpoint.counters.count(Status::RequestTimeout);
            text(
                StatusCode::REQUEST_TIMEOUT,
                "Request timeout: the request body stalled.",
            )
        }
        Ok(Err(error)) if fate == FATE_BROKEN || caused_by_body_error(&*error) => {
            tracing::info!(api = %api.shared.id, endpoint = %endpoint.id, error = %chain(&*error), "the client's request body broke off");
            endpoint.counters.count(Status::RequestTimeout);
            text(StatusCode::BAD_REQUEST, "Could not read the request body.")
        }
        Ok(Err(error)) => {
            tracing::info!(api = %api.shared.id, endpoint = %endpoint.id, error = %chain(&*error), "proxy target unreachable");
            endpoint.counters.count(Status::Unreachable);
            text(StatusCode::BAD_GATEWAY, "Bad gateway.")
        }
        Ok(Ok((res, lease))) => {
            settings.metrics.upstream(started.elapsed());
            endpoint.counters.count(Status::Ok);
            let (mut parts, body) = res.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            parts.version = Version::default();
            Response::from_parts(
                parts,
                Relay {
                    inner: body,
                    lease,
                    done: false,
                }
                .boxed(),
            )
        }
    }
}

fn too_large(limit: u64) -> Response<Body> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("Request body too large: the limit is {limit} bytes."),
    )
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Drop the hop-by-hop headers and those the `connection` header names. One pass over the
/// names first: most messages carry none, and then nothing is hashed or removed.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Which of them are present, in the one pass (usually just `connection`, or none).
    let mut present = [false; HOP_BY_HOP.len()];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    if present[0] {
        let named: Vec<HeaderName> = headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .filter(|name| !HOP_BY_HOP.contains(name))
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
}

/// Our address (`HOST` resolved) as an RFC 7239 node: an IPv6 address quoted and bracketed, an
/// IPv4 address or a name as is. Computed once; [`forwarded`] takes it.
pub fn by_node(by: &str) -> String {
    match by.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("\"[{v6}]\""),
        Ok(ip) => ip.to_string(),
        Err(_) => by.to_owned(),
    }
}

/// `for=<client>;by=<us>` with `by` from [`by_node`], IPv6 clients quoted and bracketed (RFC
/// 7239). Built without `format!`: this runs for every proxied request.
pub fn forwarded(client: IpAddr, by: &str) -> HeaderValue {
    let mut value = String::with_capacity(48 + by.len());
    value.push_str("for=");
    match client {
        IpAddr::V4(v4) => push_ipv4(&mut value, v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => push_ipv4(&mut value, v4),
            None => {
                let _ = std::fmt::Write::write_fmt(&mut value, format_args!("\"[{v6}]\""));
            }
        },
    }
    value.push_str(";by=");
    value.push_str(by);
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("for=unknown"))
}

/// Dotted decimal, as `Display` writes it (which goes through the formatting machinery).
fn push_ipv4(out: &mut String, ip: std::net::Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

/// Keep a valid W3C `traceparent`; otherwise start a new trace (and drop a `tracestate` that
/// belonged to the invalid one).
pub fn ensure_traceparent(headers: &mut HeaderMap) {
    let valid = headers
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(valid_traceparent);
    if valid {
        return;
    }
    if headers.contains_key(&TRACESTATE) {
        headers.remove(&TRACESTATE);
    }
    match new_traceparent().and_then(|v| HeaderValue::from_str(&v).ok()) {
        Some(v) => {
            headers.insert(TRACEPARENT.clone(), v);
        }
        // No randomness: forward without trace context rather than with a predictable id.
        None => {
            headers.remove(&TRACEPARENT);
        }
    }
}

/// A new W3C `traceparent` (a new trace, sampled), or `None` when the OS has no randomness.
pub fn new_traceparent() -> Option<String> {
    let mut random = [0u8; 24];
    if !trace_random(&mut random) {
        return None;
    }
    random[0] |= 1; // never the all-zero (invalid) trace id
    random[16] |= 1; // nor the all-zero parent id
    let mut value = String::with_capacity(55);
    value.push_str("00-");
    hex(&mut value, &random[..16]);
    value.push('-');
    hex(&mut value, &random[16..]);
    value.push_str("-01");
    Some(value)
}

thread_local! {
    /// xoshiro256++ state of this thread, seeded from the OS on first use.
    static TRACE_RNG: std::cell::Cell<Option<[u64; 4]>> = const { std::cell::Cell::new(None) };
}

/// Fill `out` with random bytes for trace ids: a per-thread xoshiro256++ seeded once from the
/// OS (trace ids must be unique and unpredictable enough not to collide, not secret; one
/// `getrandom` syscall per request was a measurable share of the proxy's CPU). `false` when the
/// OS has no randomness to seed with.
fn trace_random(out: &mut [u8]) -> bool {
    TRACE_RNG.with(|cell| {
        let mut s = match cell.get() {
            Some(s) => s,
            None => {
                let mut seed = [0u8; 32];
                if getrandom::fill(&mut seed).is_err() {
                    return false;
                }
                let mut s = [0u64; 4];
                for (word, chunk) in s.iter_mut().zip(seed.chunks_exact(8)) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(chunk);
                    *word = u64::from_le_bytes(b);
                }
                if s == [0; 4] {
                    s[0] = 1; // the all-zero state would stay zero
                }
                s
            }
        };
        for chunk in out.chunks_mut(8) {
            let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
            let t = s[1] << 17;
            s[2] ^= s[0];
            s[3] ^= s[1];
            s[1] ^= s[2];
            s[0] ^= s[3];
            s[2] ^= t;
            s[3] = s[3].rotate_left(45);
            chunk.copy_from_slice(&result.to_le_bytes()[..chunk.len()]);
        }
        cell.set(Some(s));
        true
    })
}

fn hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}

/// `version-traceid-parentid-flags`, lowercase hex, ids not all zero, version not `ff`.
pub fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.trim().split('-').collect();
    let lens_ok = parts.len() >= 4
        && parts[0].len() == 2
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3].len() == 2;
    let hex_ok = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    lens_ok
        && parts[..4].iter().all(|p| hex_ok(p))
        && parts[0] != "ff"
        && (parts[0] != "00" || parts.len() == 4)
        && nonzero(parts[1])
        && nonzero(parts[2])
}

fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<E>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// The client's request body failed (hyper's "error reading a body from connection").
fn caused_by_body_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && h.is_user()
            && e.source().is_some_and(|s| s.is::<hyper::Error>())
        {
            return true;
        }
        current = e.source();
    }
    false
}

fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        out.push_str(": ");
        out.push_str(&e.to_string());
        current = e.source();
    }
    out
}

/// The client stopped sending its request body for longer than `PROXY_BODY_IDLE_TIMEOUT_MS`.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled for {} ms", .0.as_millis())]
pub struct BodyIdle(Duration);

/// [`IdleBody`]'s record of how the request body ended early: not (yet).
const FATE_NONE: u8 = 0;
/// It stalled ([`BodyIdle`]).
const FATE_IDLE: u8 = 1;
/// It exceeded `PROXY_MAX_BODY_BYTES`.
const FATE_TOO_LARGE: u8 = 2;
/// The client's body broke off.
const FATE_BROKEN: u8 = 3;

/// A request body that fails with [`BodyIdle`] when no frame arrives for `idle` while the upstream
/// connection waits for one, so a stalled client cannot hold an upstream connection: the client
/// aborts the upstream request (HTTP/1.1: the connection is closed, HTTP/2: the stream reset).
/// The timer only runs while the body is polled and has nothing, never while the upstream is busy.
pub struct IdleBody<B> {
    inner: B,
    idle: Duration,
    /// Armed at the first wait, re-armed after each frame.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether a frame arrived since the timer was last armed.
    fresh: bool,
    timeouts: Arc<AtomicU64>,
    /// Set to a `FATE_*` when the body fails.
    fate: Arc<AtomicU8>,
}

impl<B> std::fmt::Debug for IdleBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleBody")
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl<B> IdleBody<B> {
    /// `inner`, failing after `idle` without data; each such failure counts in `timeouts`, and
    /// any failure is recorded in `fate` (`FATE_*`).
    fn new(inner: B, idle: Duration, timeouts: Arc<AtomicU64>, fate: Arc<AtomicU8>) -> Self {
        Self {
            inner,
            idle,
            timer: None,
            fresh: false,
            timeouts,
            fate,
        }
    }
}

impl<B> hyper::body::Body for IdleBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(error))) => {
                let error: Self::Error = error.into();
                let fate = if error.is::<LengthLimitError>() {
                    FATE_TOO_LARGE
                } else {
                    FATE_BROKEN
                };
                this.fate.store(fate, Ordering::Relaxed);
                return Poll::Ready(Some(Err(error)));
            }
            Poll::Ready(frame) => {
                this.fresh = true;
                return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
            }
            Poll::Pending => {}
        }
        let deadline = tokio::time::Instant::now() + this.idle;
        let timer = match &mut this.timer {
            Some(timer) => {
                if this.fresh {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => this
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        this.fresh = false;
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.timeouts.fetch_add(1, Ordering::Relaxed);
                this.fate.store(FATE_IDLE, Ordering::Relaxed);
                tracing::info!(
                    idle_ms = this.idle.as_millis() as u64,
                    "a proxied request body stalled: the upstream request is aborted"
                );
                Poll::Ready(Some(Err(Box::new(BodyIdle(this.idle)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The backend's response body, streamed to the client. The handler body type cannot fail, so a
/// broken upstream body ends the stream early (logged); when the backend declared a
/// `content-length` the client sees the response is incomplete. A pooled connection's [`Lease`]
/// is driven here while the body streams, and released to the pool when the body has ended; a
/// body dropped before its end (the client left) closes the connection with it.
struct Relay {
    inner: Incoming,
    lease: Option<Lease>,
    done: bool,
}

impl Relay {
    fn finish(&mut self, clean: bool) {
        self.done = true;
        if let Some(lease) = self.lease.take()
            && clean
        {
            lease.release();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // A body the server never polled because it was known to be empty ended cleanly too.
        if !self.done && hyper::body::Body::is_end_stream(&self.inner) {
            self.finish(true);
        }
    }
}

impl hyper::body::Body for Relay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(lease) = &mut self.lease {
            lease.drive(cx);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // The last frame: the connection is idle again before the client has the bytes,
                // so a client's next request finds it in the pool.
                if hyper::body::Body::is_end_stream(&self.inner) {
                    self.finish(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                tracing::warn!(%error, "the proxy target's response body broke off");
                self.finish(false);
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_dropped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, x-private"),
            ("keep-alive", "5"),
            ("te", "trailers"),
            ("x-private", "1"),
            ("x-kept", "1"),
            ("transfer-encoding", "chunked"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, vec!["x-kept"]);
    }

    /// A body fed by `rx`, one frame per message; pending while nothing is sent.
    fn channel_body(
        rx: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> http_body_util::StreamBody<
        impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Unpin,
    > {
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok(Frame::data(b)), rx))
        });
        http_body_util::StreamBody::new(Box::pin(stream))
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_after_the_idle_timeout_and_is_counted() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let counter = Arc::new(AtomicU64::new(0));
        let idle = Duration::from_secs(30);
        let fate = Arc::new(AtomicU8::new(FATE_NONE));
        let mut body = IdleBody::new(channel_body(rx), idle, counter.clone(), fate.clone());
        // Frames arriving within the idle time keep the body alive, however long it lasts.
        for _ in 0..5 {
            let feed = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(20)).await;
                let _ = feed.send(Bytes::from_static(b"chunk")).await;
            });
            let frame = body.frame().await.expect("a frame").expect("no error");
            assert_eq!(frame.into_data().expect("data"), "chunk");
        }
        assert_eq!(counter.load(Ordering::Relaxed), 0);
        assert_eq!(fate.load(Ordering::Relaxed), FATE_NONE);
        // Then the client stops sending: the body fails once, with BodyIdle, and it is counted.
        let error = body.frame().await.expect("an error").expect_err("stalled");
        assert!(error.is::<BodyIdle>(), "{error}");
        assert_eq!(counter.load(Ordering::Relaxed), 1);
        assert_eq!(fate.load(Ordering::Relaxed), FATE_IDLE);
        drop(tx);
    }

    #[test]
    fn forwarded_quotes_ipv6() {
        let v4: IpAddr = "10.0.0.1".parse().expect("ip");
        assert_eq!(
            forwarded(v4, &by_node("127.0.0.1")),
            "for=10.0.0.1;by=127.0.0.1"
        );
        let v6: IpAddr = "::1".parse().expect("ip");
        assert_eq!(forwarded(v6, &by_node("::1")), "for=\"[::1]\";by=\"[::1]\"");
        let mapped: IpAddr = "::ffff:192.168.0.1".parse().expect("ip");
        assert_eq!(forwarded(mapped, "gw"), "for=192.168.0.1;by=gw");
        for ip in ["0.0.0.0", "1.20.255.9", "100.10.1.99", "255.255.255.255"] {
            let v4: IpAddr = ip.parse().expect("ip");
            assert_eq!(forwarded(v4, "x"), format!("for={ip};by=x").as_str());
        }
    }

    #[test]
    fn traceparent_is_kept_when_valid_else_generated() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static(valid));
        h.insert("tracestate", HeaderValue::from_static("a=b"));
        ensure_traceparent(&mut h);
        assert_eq!(h["traceparent"], valid);
        assert_eq!(h["tracestate"], "a=b");
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        ensure_traceparent(&mut h);
        let generated = h["traceparent"].to_str().expect("ascii").to_owned();
        assert!(valid_traceparent(&generated), "{generated}");
        assert!(h.get("tracestate").is_none());
        let mut empty = HeaderMap::new();
        ensure_traceparent(&mut empty);
        assert!(valid_traceparent(
            empty["traceparent"].to_str().expect("ascii")
        ));
        // Generated ids do not repeat.
        let ids: std::collections::HashSet<String> = (0..1000)
            .map(|_| {
                let mut h = HeaderMap::new();
                ensure_traceparent(&mut h);
                h["traceparent"].to_str().expect("ascii").to_owned()
            })
            .collect();
        assert_eq!(ids.len(), 1000);
    }
}
