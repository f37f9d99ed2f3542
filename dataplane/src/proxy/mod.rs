//! The reverse proxy / API gateway of the inbound port: every request no `/_rig/...` route
//! handles is matched against the route table and sent to its target.
//!
//! - [`routes`]: the table (compiled `ProxyRoute` objects and RIG definitions), first match wins.
//! - [`rig`]: RIG's API definition format and its validation error map.
//! - [`http`]: the HTTP target (streaming, header rules, pooled client, timeouts).
//! - [`api`]: `/v3/apis` on the internal port.
//! - [`metrics`]: `rig_proxy_requests_total` and the upstream latency histogram.
//!
//! The table is swapped whole ([`Proxy::table`] hands out an `Arc` under a lock held only for the
//! clone), so a request sees one consistent configuration and a reload never waits for requests.
//! Targets are an enum ([`routes::Target`]); the Kafka target and correlated responses
//! (`response_from` `http_async`/`kafka`) are answered 501 until they are built.

pub mod api;
pub mod http;
pub mod metrics;
pub mod rig;
pub mod routes;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ::http::{HeaderValue, StatusCode, header};
use hyper::body::Incoming;
use hyper::{Request, Response};
use rig_crds::ProxyRoute;
use serde_json::Value;

use crate::auth::jwt::bearer_tokens;
use crate::http::{Body, json, text};
use crate::state::State;
use metrics::{ProxyMetrics, Status};
use routes::{Api, Auth, Found, ResponseFrom, RouteError, Table, Target};

/// A RIG definition as the API keeps it: deactivated ones stay (RIG's soft delete).
#[derive(Debug, Clone)]
struct RigEntry {
    /// The definition with RIG's meta fields (`active`, `ref_number`, ...).
    definition: Value,
    /// The compiled API while it is active.
    api: Option<Arc<Api>>,
}

/// The proxy: route table, upstream client, metrics.
#[derive(Debug)]
pub struct Proxy {
    table: RwLock<Arc<Table>>,
    /// APIs from `ProxyRoute` objects, ordered by namespace/name.
    manifest: Mutex<Vec<Arc<Api>>>,
    /// APIs from `PROXY_CONFIG_FILE` and `/v3/apis`, in creation order.
    rig: Mutex<Vec<RigEntry>>,
    /// Proxy metrics.
    pub metrics: ProxyMetrics,
    upstream: http::Upstream,
    max_body: u64,
    default_timeout: Duration,
    by: String,
    cors: HeaderValue,
}

impl Proxy {
    /// An empty proxy (every request 404) with the process settings.
    pub fn new(max_body: u64, default_timeout: Duration, host: &str, cors: HeaderValue) -> Self {
        Self {
            table: RwLock::new(Arc::new(Table::default())),
            manifest: Mutex::new(Vec::new()),
            rig: Mutex::new(Vec::new()),
            metrics: ProxyMetrics::default(),
            upstream: http::Upstream::new(),
            max_body,
            default_timeout,
            by: resolve_host(host),
            cors,
        }
    }

    /// The table in effect: one `Arc` clone under a short read lock.
    pub fn table(&self) -> Arc<Table> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replace the APIs from `ProxyRoute` objects (validated beforehand by
    /// [`validate_manifests`]); the table is swapped at once.
    pub fn set_manifests(&self, routes: &[ProxyRoute]) -> Result<(), RouteError> {
        let apis = routes::from_manifests(routes, &self.metrics)?;
        *self
            .manifest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = apis;
        self.rebuild();
        Ok(())
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
    }

    /// The `/v3/apis` settings of this proxy, for the RIG definitions it compiles.
    fn compile_rig(&self, definition: &Value) -> Result<Api, rig::ErrorMap> {
        rig::compile(
            definition,
            &|k| std::env::var(k).ok(),
            self.default_timeout,
            &self.metrics,
        )
    }

    /// Append the proxy metrics to a `/metrics` text.
    pub fn render_metrics(&self, out: &mut String) {
        self.metrics.render(out);
    }
}

/// Check `ProxyRoute` objects without installing them (a reload is validated whole first).
pub fn validate_manifests(routes: &[ProxyRoute]) -> Result<(), RouteError> {
    routes::from_manifests(routes, &ProxyMetrics::default()).map(drop)
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
    state: &Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let proxy = &state.proxy;
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
            if endpoint.secured && !authorized(state, &api.shared.auth, &req) {
                endpoint.counters.count(Status::BadRequest);
                tracing::info!(api = %api.shared.id, endpoint = %endpoint.id, "proxy request without a valid JWT");
                return unauthorized(&proxy.cors);
            }
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
                    };
                    http::forward(&settings, api, endpoint, target, req, peer).await
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

/// Whether the request carries at least one valid, non-revoked JWT where `auth` says to look.
fn authorized(state: &State, auth: &Auth, req: &Request<Incoming>) -> bool {
    if let Some(name) = &auth.header {
        let valid = if name == header::AUTHORIZATION {
            bearer_tokens(req.headers())
                .into_iter()
                .any(|t| state.verify_jwt(t).is_ok())
        } else {
            req.headers()
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|t| state.verify_jwt(t.trim()).is_ok())
        };
        if valid {
            return true;
        }
    }
    if let (Some(param), Some(query)) = (&auth.query, req.uri().query()) {
        return form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == param)
            .any(|(_, v)| {
                v.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .any(|t| state.verify_jwt(t).is_ok())
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

/// Whether `method` is one the `/v3/apis` API answers on `path`.
pub fn is_api_path(path: &str) -> bool {
    path == "/v3/apis" || path.starts_with("/v3/apis/")
}
