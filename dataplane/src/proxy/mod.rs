//! The reverse proxy / API gateway of the inbound port: every request no `/_rig/...` route
//! handles is matched against the route table and sent to its target.
//!
//! - [`routes`]: the table (compiled `ProxyRoute` objects and RIG definitions), first match wins.
//! - [`rig`]: RIG's API definition format and its validation error map.
//! - [`http`]: the HTTP target (streaming, header rules, pooled client, timeouts).
//! - [`api`]: `/v3/apis` on the internal port.
//! - [`metrics`]: `rig_proxy_requests_total` and the upstream latency histogram.
//! - [`kafka`]: the Kafka target (CloudEvent with RIG's `rig` extension) and the response-topic
//!   reader.
//! - [`correlation`]: the pending map of requests waiting for correlated responses.
//! - [`jwt_cache`]: verified JWTs of `secured` endpoints, re-checked for time and revocation.
//!
//! The table is swapped whole ([`Proxy::table`] hands out an `Arc` under a lock held only for the
//! clone), so a request sees one consistent configuration and a reload never waits for requests.
//! Targets are an enum ([`routes::Target`]). The Kafka target ([`kafka`]) produces the request as
//! a CloudEvent; correlated responses ([`correlation`]) hold the request until the response
//! arrives through `POST /v3/responses` or the response topics. Any correlated request accepts a
//! response from either channel (the pending map is shared), so `http_async` and `kafka` differ
//! only in how the responder is expected to answer.

pub mod api;
pub mod correlation;
pub mod fast;
pub mod http;
pub mod jwt_cache;
pub mod kafka;
pub mod metrics;
pub mod path;
pub mod pool;
pub mod request_log;
pub mod rig;
pub mod routes;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use ::http::{HeaderValue, StatusCode, header};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::Value;

use crate::auth::jwt::bearer_tokens;
use crate::http::{Body, json, text};
use metrics::{ProxyMetrics, Status};
use routes::{Api, Auth, Found, ResponseFrom, Table, Target};

/// A RIG definition as the API keeps it: deactivated ones stay (RIG's soft delete).
#[derive(Debug, Clone)]
struct RigEntry {
    /// The definition with RIG's meta fields (`active`, `ref_number`, ...).
    definition: Value,
    /// The compiled API while it is active.
    api: Option<Arc<Api>>,
}

/// What the proxy needs to know about the process (from `Config`, read by the wiring).
#[derive(Debug, Clone)]
pub struct Settings {
    /// This process's name (in correlation ids).
    pub owner: String,
    /// The inbound address (the `rig` extension's host and port of Kafka-target events).
    pub inbound: SocketAddr,
    /// The inbound TLS listener's address, when TLS is served.
    pub inbound_https: Option<SocketAddr>,
    /// `PROXY_KAFKA_RESPONSE_TIMEOUT` (RIG definitions).
    pub kafka_response_timeout: Duration,
    /// `PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT` (RIG definitions).
    pub http_async_response_timeout: Duration,
    /// Cluster mode (the proxy API's writes are refused for `ProxyRoute` APIs either way).
    pub cluster_mode: bool,
    /// The environment for RIG definitions' `use_env` targets (`/v3/apis`).
    pub use_env: crate::config::UseEnv,
    /// `RIG_HEAD_TIMEOUT_MS`: request heads read by the direct path.
    pub head_timeout: Duration,
    /// Bodies the proxy reads whole (Kafka targets, `/v3/responses`): `PROXY_BODY_IDLE_TIMEOUT_MS`.
    pub body_idle_timeout: Duration,
    /// `/v3/apis` definitions: `RIG_BODY_IDLE_TIMEOUT_MS`.
    pub api_body_idle_timeout: Duration,
    /// `REQUEST_LOG`, `KAFKA_LOG_TOPIC`.
    pub request_log: crate::config::RequestLog,
}

/// The proxy: route table, upstream client, metrics, and the handles it needs (JWT verification
/// with revocation, the peers for correlated responses).
#[derive(Debug)]
pub struct Proxy {
    /// The process settings the proxy uses.
    pub settings: Settings,
    /// End-user JWTs of secured endpoints.
    pub jwt: Arc<crate::auth::Jwt>,
    /// The other processes (correlated responses for their requests are forwarded).
    pub peers: Arc<crate::peers::Peers>,
    table: RwLock<Arc<Table>>,
    /// Bumped on every table swap, so a long-lived connection can keep its `Arc` of the table
    /// and re-fetch only when this changed (a shared read, not a lock and a reference count).
    generation: AtomicU64,
    /// APIs from `ProxyRoute` objects, ordered by namespace/name.
    manifest: Mutex<Vec<Arc<Api>>>,
    /// APIs from `PROXY_CONFIG_FILE` and `/v3/apis`, in creation order.
    rig: Mutex<Vec<RigEntry>>,
    /// Proxy metrics.
    pub metrics: ProxyMetrics,
    upstream: http::Upstream,
    max_body: u64,
    default_timeout: Duration,
    /// `HOST` as a `forwarded` node ([`http::by_node`]).
    by: String,
    cors: HeaderValue,
    /// Requests waiting for correlated responses.
    pub correlations: correlation::Correlations,
    /// `rig_produced_events_total` / `rig_produced_events_failed_total`.
    pub produced: kafka::Produced,
    /// The Kafka producer, set at start when `KAFKA_BROKERS` is configured.
    pub producer: OnceLock<kafka::Producer>,
    /// Response-topic partitions this process reads (`rig_proxy_response_partitions`).
    pub response_partitions: AtomicU64,
    /// Verified JWTs of `secured` endpoints.
    jwt_cache: jwt_cache::JwtCache,
    /// `REQUEST_LOG`.
    pub request_log: request_log::RequestLog,
}

impl Proxy {
    /// An empty proxy (every request 404) with the process settings and the upstream clients.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Settings,
        jwt: Arc<crate::auth::Jwt>,
        peers: Arc<crate::peers::Peers>,
        max_body: u64,
        default_timeout: Duration,
        host: &str,
        cors: HeaderValue,
        upstream: http::Upstream,
    ) -> Self {
        Self {
            jwt,
            peers,
            table: RwLock::new(Arc::new(Table::default())),
            generation: AtomicU64::new(0),
            manifest: Mutex::new(Vec::new()),
            rig: Mutex::new(Vec::new()),
            metrics: ProxyMetrics::default(),
            upstream,
            max_body,
            default_timeout,
            by: http::by_node(&resolve_host(host)),
            cors,
            correlations: correlation::Correlations::default(),
            produced: kafka::Produced::default(),
            producer: OnceLock::new(),
            response_partitions: AtomicU64::new(0),
            jwt_cache: jwt_cache::JwtCache::default(),
            request_log: request_log::RequestLog::new(&settings.request_log),
            settings,
        }
    }

    /// The table generation now (see [`Proxy::table_if_changed`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The table in effect with its generation, unless the generation is still `seen`.
    pub fn table_if_changed(&self, seen: u64) -> Option<(u64, Arc<Table>)> {
        // The generation is bumped after the swap: a table read after it is at least that new
        // (a newer one is fetched again at the next look, harmlessly).
        let now = self.generation();
        (now != seen).then(|| (now, self.table()))
    }

    /// The table in effect: one `Arc` clone under a short read lock.
    pub fn table(&self) -> Arc<Table> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replace the APIs of `ProxyRoute` objects (compiled by the one compiler); the table is
    /// swapped at once.
    pub fn set_routes(&self, routes: &[Arc<rig_crds::compile::ProxyApi>]) {
        let apis = routes::from_compiled(routes, &self.metrics);
        *self
            .manifest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = apis;
        self.rebuild();
    }

    /// Load RIG's `PROXY_CONFIG_FILE` (its text): every definition must be valid, else the error
    /// map. `env` resolves `use_env` target URLs.
    pub fn load_rig_config(
        &self,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<usize, rig::ErrorMap> {
        let apis = rig::parse_list(text, env, self.default_timeout, &self.metrics)?;
        let n = apis.len();
        let mut rig = self
            .rig
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rig.extend(apis.into_iter().map(|(definition, api)| RigEntry {
            definition,
            api: Some(Arc::new(api)),
        }));
        drop(rig);
        self.rebuild();
        Ok(n)
    }

    /// Rebuild the table from the current sources and swap it in.
    fn rebuild(&self) {
        let mut apis: Vec<Arc<Api>> = self
            .manifest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        apis.extend(
            self.rig
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .filter_map(|e| e.api.clone()),
        );
        let table = Arc::new(Table::new(apis));
        *self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = table;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// The `/v3/apis` settings of this proxy, for the RIG definitions it compiles.
    fn compile_rig(&self, definition: &Value) -> Result<Api, rig::ErrorMap> {
        rig::compile(
            definition,
            &|k| self.settings.use_env.get(k),
            self.default_timeout,
            &self.metrics,
        )
    }

    /// The plain TCP upstream connections of the direct path ([`fast`]).
    pub fn upstream_streams(&self) -> &pool::StreamPool {
        &self.upstream.streams
    }

    /// Append the proxy metrics to a `/metrics` text.
    pub fn render_metrics(&self, out: &mut String) {
        self.metrics.render(out);
        self.correlations.render(out);
        self.produced.render(out);
        self.request_log.render(out);
        crate::support::prom::counter(
            out,
            "rig_proxy_request_body_timeouts_total",
            "Proxied requests aborted because the client's body stalled (PROXY_BODY_IDLE_TIMEOUT_MS).",
            self.upstream.body_timeouts(),
        );
        crate::support::prom::gauge(
            out,
            "rig_proxy_response_partitions",
            "Response-topic partitions this process reads.",
            self.response_partitions
                .load(std::sync::atomic::Ordering::Relaxed),
        );
    }
}

/// `HOST` as an IP for `forwarded: by=` (RIG: the IP of `HOST`); resolved once at start.
fn resolve_host(host: &str) -> String {
    use std::net::ToSocketAddrs;
    if host.parse::<std::net::IpAddr>().is_ok() {
        return host.to_owned();
    }
    (host, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .map_or_else(|| host.to_owned(), |a| a.ip().to_string())
}

/// Route `req` (not handled by a `/_rig/...` route) through the proxy.
pub async fn handle(
    proxy: &Arc<Proxy>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let mut req = req;
    // Matching, auth, rewriting and forwarding all see the normal form of the path.
    match path::normalize(req.uri().path()) {
        Ok(None) => {}
        Ok(Some(normal)) => match with_path(req.uri(), &normal) {
            Some(uri) => *req.uri_mut() = uri,
            None => return text(StatusCode::BAD_REQUEST, "Bad request: invalid path."),
        },
        Err(refused) => {
            proxy.metrics.refused_path(req.method());
            tracing::info!(path = %req.uri().path(), reason = %refused, "proxy request refused: ambiguous path");
            return text(StatusCode::BAD_REQUEST, format!("Bad request: {refused}."));
        }
    }
    let table = proxy.table();
    match table.find(req.method(), req.uri().path()) {
        Found::NotFound => {
            proxy.metrics.not_found(req.method());
            json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"message": "Not Found"}),
            )
        }
        Found::MethodNotAllowed => text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed."),
        Found::Endpoint(api, endpoint) => {
            if endpoint.secured && !authorized(proxy, &api.shared.auth, &req) {
                endpoint.counters.count(Status::BadRequest);
                tracing::info!(api = %api.shared.id, endpoint = %endpoint.id, "proxy request without a valid JWT");
                return unauthorized(&proxy.cors);
            }
            // Logged as RIG logs it: matched, past the JWT check, before it is forwarded.
            request_log::RequestLog::call(
                proxy,
                api,
                endpoint,
                req.uri().path(),
                peer,
                req.headers()
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok()),
            );
            match (
                endpoint.target(&api.shared),
                endpoint.response_from(&api.shared),
            ) {
                (Target::Http(target), ResponseFrom::Http) => {
                    let settings = http::Settings {
                        upstream: &proxy.upstream,
                        max_body: proxy.max_body,
                        by: &proxy.by,
                        metrics: &proxy.metrics,
                        correlation: None,
                    };
                    http::forward(&settings, api, endpoint, target, req, peer).await
                }
                (Target::Http(target), ResponseFrom::HttpAsync | ResponseFrom::Kafka) => {
                    correlated_http(proxy, api, endpoint, target, req, peer).await
                }
                (
                    Target::Kafka {
                        topic,
                        wrap_plain_json,
                        wrap_event_type,
                    },
                    response_from @ (ResponseFrom::Http
                    | ResponseFrom::HttpAsync
                    | ResponseFrom::Kafka),
                ) => {
                    let wrap = wrap_plain_json.then(|| wrap_event_type.as_deref().unwrap_or(""));
                    let waits = response_from != ResponseFrom::Http;
                    kafka_target(proxy, api, endpoint, topic, wrap, waits, req, peer).await
                }
                (target, response_from) => {
                    endpoint.counters.count(Status::BadRequest);
                    tracing::warn!(api = %api.shared.id, endpoint = %endpoint.id, target = target.label(), response_from = response_from.label(), "proxy route uses a target or response source that is not available yet");
                    text(
                        StatusCode::NOT_IMPLEMENTED,
                        format!(
                            "Target {} with response from {} is not supported by this gateway yet.",
                            target.label(),
                            response_from.label()
                        ),
                    )
                }
            }
        }
    }
}

/// Whether the request carries at least one valid, non-revoked JWT where `auth` says to look
/// (verified tokens are cached, see [`jwt_cache`]).
fn authorized(proxy: &Proxy, auth: &Auth, req: &Request<Incoming>) -> bool {
    authorized_in(proxy, auth, req.headers(), req.uri().query())
}

/// [`authorized`] on a request's headers and query string.
fn authorized_in(
    proxy: &Proxy,
    auth: &Auth,
    headers: &::http::HeaderMap,
    query: Option<&str>,
) -> bool {
    let cache = &proxy.jwt_cache;
    if let Some(name) = &auth.header {
        let valid = if name == header::AUTHORIZATION {
            bearer_tokens(headers)
                .into_iter()
                .any(|t| cache.verify(proxy, t))
        } else {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|t| cache.verify(proxy, t.trim()))
        };
        if valid {
            return true;
        }
    }
    if let (Some(param), Some(query)) = (&auth.query, query) {
        return form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == param)
            .any(|(_, v)| {
                v.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .any(|t| cache.verify(proxy, t))
            });
    }
    false
}

/// RIG's 401, with its CORS headers (RIG issue #344).
fn unauthorized(cors: &HeaderValue) -> Response<Body> {
    let mut res = text(StatusCode::UNAUTHORIZED, "Authentication failed.");
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, cors.clone());
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    res
}

/// `uri` with its path replaced by `path` (query kept).
fn with_path(uri: &::http::Uri, path: &str) -> Option<::http::Uri> {
    let target = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(target.parse().ok()?);
    ::http::Uri::from_parts(parts).ok()
}

/// Whether `method` is one the `/v3/apis` API answers on `path`.
pub fn is_api_path(path: &str) -> bool {
    // RIG serves `/v2/...` like `/v3/...`.
    ["/v3/apis", "/v2/apis"].iter().any(|p| {
        path == *p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// RIG's CORS headers on proxy answers produced here (not by a backend).
fn with_cors(
    mut res: Response<Body>,
    cors: &HeaderValue,
    allow_headers: &'static str,
) -> Response<Body> {
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, cors.clone());
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(allow_headers),
    );
    res
}

/// The client's answer from a correlated response: its status, headers and body, plus CORS.
fn from_reply(
    reply: correlation::Reply,
    cors: &HeaderValue,
    allow_headers: &'static str,
) -> Response<Body> {
    let mut res = Response::new(crate::http::full(reply.body));
    *res.status_mut() = reply.status;
    *res.headers_mut() = reply.headers;
    with_cors(res, cors, allow_headers)
}

/// RIG's 504 after no correlated response came: empty body, CORS.
fn response_timeout(cors: &HeaderValue, allow_headers: &'static str) -> Response<Body> {
    let mut res = Response::new(crate::http::full(bytes::Bytes::new()));
    *res.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    with_cors(res, cors, allow_headers)
}

/// How long a correlated request waits for its response: a `ProxyRoute`'s `response.timeout`;
/// for RIG definitions RIG's `PROXY_KAFKA_RESPONSE_TIMEOUT` / `PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT`.
fn response_wait(proxy: &Proxy, api: &routes::Api, response_from: ResponseFrom) -> Duration {
    match (api.origin, response_from) {
        (routes::Origin::Rig, ResponseFrom::Kafka) => proxy.settings.kafka_response_timeout,
        (routes::Origin::Rig, ResponseFrom::HttpAsync) => {
            proxy.settings.http_async_response_timeout
        }
        _ => api.shared.timeout,
    }
}

/// 503 when the pending map is full.
fn too_many_waiting() -> Response<Body> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "Too many requests are waiting for correlated responses; try again later.",
    )
}

/// HTTP target with `response_from` `http_async`/`kafka`: the backend gets `correlation=<id>` in
/// the query; its 202 means "the answer comes later", anything else is passed through at once.
async fn correlated_http(
    proxy: &Arc<Proxy>,
    api: &routes::Api,
    endpoint: &routes::Endpoint,
    target: &routes::HttpTarget,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let Some(pending) = proxy.correlations.register(&proxy.settings.owner) else {
        endpoint.counters.count(Status::Unreachable);
        return too_many_waiting();
    };
    let settings = http::Settings {
        upstream: &proxy.upstream,
        max_body: proxy.max_body,
        by: &proxy.by,
        metrics: &proxy.metrics,
        correlation: Some(&pending.id),
    };
    let res = http::forward(&settings, api, endpoint, target, req, peer).await;
    if res.status() != StatusCode::ACCEPTED {
        pending.cancel();
        return res;
    }
    // The backend's 202 body is not for the client; its connection is released by dropping it.
    drop(res);
    let timeout = response_wait(proxy, api, endpoint.response_from(&api.shared));
    match pending.wait(timeout).await {
        Some(reply) => from_reply(reply, &proxy.cors, "content-type"),
        None => {
            tracing::info!(api = %api.shared.id, endpoint = %endpoint.id, "no correlated response within the route timeout");
            response_timeout(&proxy.cors, "content-type")
        }
    }
}

/// The Kafka target: produce the request as a CloudEvent; answer 202 once acknowledged, or wait
/// for the correlated response (`waits`).
#[allow(clippy::too_many_arguments)]
async fn kafka_target(
    proxy: &Arc<Proxy>,
    api: &routes::Api,
    endpoint: &routes::Endpoint,
    topic: &str,
    wrap: Option<&str>,
    waits: bool,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    const ALLOW: &str = "content-type,authorization";
    if req.method() == ::http::Method::OPTIONS {
        endpoint.counters.count(Status::Ok);
        let mut res = Response::new(crate::http::full(bytes::Bytes::new()));
        *res.status_mut() = StatusCode::NO_CONTENT;
        return with_cors(res, &proxy.cors, ALLOW);
    }
    let (mut parts, body) = req.into_parts();
    let limit = usize::try_from(proxy.max_body).unwrap_or(usize::MAX);
    let body = match crate::http::read_body(body, limit, proxy.settings.body_idle_timeout).await {
        Ok(b) => b,
        Err(res) => {
            endpoint.counters.count(Status::BadRequest);
            return res;
        }
    };
    if endpoint.add_headers {
        for (name, value) in &api.shared.add_headers {
            parts.headers.insert(name.clone(), value.clone());
        }
    }
    let path = endpoint.rewrite(parts.uri.path());
    let (scheme, port) = match proxy.settings.inbound_https {
        Some(tls) if parts.extensions.get::<crate::http::Secure>().is_some() => {
            ("https", tls.port())
        }
        _ => ("http", proxy.settings.inbound.port()),
    };
    let request_info = |correlation| kafka::RequestInfo {
        correlation,
        peer,
        method: &parts.method,
        path: &path,
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        scheme,
        authority: parts.uri.authority().map(|a| a.as_str()),
        port,
        wrap,
    };
    if proxy.producer.get().is_none() {
        // A body RIG would refuse gets RIG's 400 first; only one it would accept is 503.
        let probe = proxy.correlations.fresh_id(&proxy.settings.owner);
        return match kafka::build_event(&body, &request_info(&probe)) {
            Err(error) => {
                endpoint.counters.count(Status::BadRequest);
                text(StatusCode::BAD_REQUEST, error.to_string())
            }
            Ok(_) => {
                proxy.produced.count(topic, false);
                endpoint.counters.count(Status::Unreachable);
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    kafka::ProduceError::NotConfigured.to_string(),
                )
            }
        };
    }
    let pending = if waits {
        match proxy.correlations.register(&proxy.settings.owner) {
            Some(p) => Some(p),
            None => {
                endpoint.counters.count(Status::Unreachable);
                return too_many_waiting();
            }
        }
    } else {
        None
    };
    let fresh;
    let correlation = match &pending {
        Some(p) => p.id.as_str(),
        None => {
            fresh = proxy.correlations.fresh_id(&proxy.settings.owner);
            fresh.as_str()
        }
    };
    let event = match kafka::build_event(&body, &request_info(correlation)) {
        Ok(e) => e,
        Err(error) => {
            endpoint.counters.count(Status::BadRequest);
            return text(StatusCode::BAD_REQUEST, error.to_string());
        }
    };
    if let Err(error) = kafka::produce(
        proxy.producer.get(),
        &proxy.produced,
        topic,
        &event,
        api.shared.timeout,
    )
    .await
    {
        endpoint.counters.count(Status::Unreachable);
        return text(StatusCode::SERVICE_UNAVAILABLE, error.to_string());
    }
    let Some(pending) = pending else {
        endpoint.counters.count(Status::Ok);
        return with_cors(text(StatusCode::ACCEPTED, "Accepted."), &proxy.cors, ALLOW);
    };
    let timeout = response_wait(proxy, api, endpoint.response_from(&api.shared));
    match pending.wait(timeout).await {
        Some(mut reply) => {
            endpoint.counters.count(Status::Ok);
            if !reply.headers.contains_key("traceparent")
                && let Ok(tp) = HeaderValue::from_str(&event.traceparent)
            {
                reply.headers.insert("traceparent", tp);
            }
            from_reply(reply, &proxy.cors, ALLOW)
        }
        None => {
            endpoint.counters.count(Status::ResponseTimeout);
            tracing::info!(api = %api.shared.id, endpoint = %endpoint.id, %topic, "no correlated response within the route timeout");
            response_timeout(&proxy.cors, ALLOW)
        }
    }
}

/// `POST /v3/responses` (internal port): a correlated response over HTTP, headers
/// `rig-correlation` and `rig-response-code`, the body as-is. 202 when a request got it; 400 for
/// missing or bad headers; 404 when nothing of this process waits for the correlation (it timed
/// out, the client left, or it never existed). A correlation of another process is forwarded to
/// it when `RIG_PEERS` names it (once: a forwarded response is never forwarded again), else 409
/// (send it to that process's internal port).
pub async fn responses(proxy: &Arc<Proxy>, req: Request<Incoming>) -> Response<Body> {
    let correlations = &proxy.correlations;
    let (parts, body) = req.into_parts();
    let Some(id) = parts.headers.get(correlation::HEADER_CORRELATION).cloned() else {
        correlations.count_invalid();
        return text(
            StatusCode::BAD_REQUEST,
            "Failed to parse request body: the header rig-correlation is missing.",
        );
    };
    let status = match correlation::parse_code(
        parts
            .headers
            .get(correlation::HEADER_RESPONSE_CODE)
            .map(HeaderValue::as_bytes),
    ) {
        Ok(s) => s,
        Err(error) => {
            correlations.count_invalid();
            return text(
                StatusCode::BAD_REQUEST,
                format!("Failed to parse request body: {error}."),
            );
        }
    };
    let limit = usize::try_from(proxy.max_body).unwrap_or(usize::MAX);
    let body = match crate::http::read_body(body, limit, proxy.settings.body_idle_timeout).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let forwarded = parts.headers.contains_key(crate::peers::FORWARDED_HEADER);
    if !forwarded
        && !correlation::Correlations::is_own(&proxy.settings.owner, id.as_bytes())
        && let Some(owner) = correlation::owner_of(id.as_bytes())
        && proxy.peers.knows(&owner)
    {
        // Another process holds the request: one HTTP hop to its internal port.
        return match proxy.peers.forward_response(&owner, &parts, body).await {
            Ok(res) => res,
            Err(error) => text(
                error.status(),
                format!(
                    "the correlated request is held by the data-plane process {owner:?}, which could not be reached: {error}"
                ),
            ),
        };
    }
    let reply = correlation::Reply {
        status,
        headers: correlation::reply_headers(
            parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes())),
        ),
        body,
    };
    match correlations.deliver(&proxy.settings.owner, id.as_bytes(), reply) {
        correlation::Delivery::Delivered => text(
            StatusCode::ACCEPTED,
            "message sent to correlated reverse proxy request",
        ),
        correlation::Delivery::Late => text(
            StatusCode::NOT_FOUND,
            "no request waiting for this correlation (it timed out, the client left, or it never existed)",
        ),
        correlation::Delivery::Foreign(owner) => text(
            StatusCode::CONFLICT,
            format!(
                "this correlation belongs to the data-plane process {owner:?}, not to {:?}, and RIG_PEERS does not name it: send the response to that process's internal port",
                proxy.settings.owner
            ),
        ),
        correlation::Delivery::Malformed => text(
            StatusCode::BAD_REQUEST,
            "Failed to parse request body: rig-correlation is not a correlation id of this gateway.",
        ),
    }
}
