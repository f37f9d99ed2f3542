//! The proxy's route table: APIs compiled from `ProxyRoute` manifests and from RIG's API
//! definitions (`PROXY_CONFIG_FILE`, `/v3/apis`) into one ordered list of endpoints.
//!
//! Everything that can be prepared is prepared here, once per configuration: regexes are compiled
//! (anchored, case-insensitive), targets parsed into scheme and authority, added headers parsed
//! into typed names and values, and each endpoint gets its metric counters. A request then only
//! walks the list and runs the regexes ([`Table::find`]). First match wins: manifests ordered by
//! namespace/name, then RIG's definitions in file (or creation) order.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use regex::{Regex, RegexBuilder};
use rig_crds::ProxyRoute;
use rig_crds::proxy_route::{self, TargetKind};

use super::metrics::{EndpointCounters, ProxyMetrics};

/// Largest compiled regex (bytes of the automaton): generous for path patterns, and a bound on
/// what one definition can cost.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why a `ProxyRoute` could not be compiled (RIG definitions report [`super::rig::ErrorMap`]).
#[derive(Debug, thiserror::Error)]
#[error("ProxyRoute {route}: {reason}")]
pub struct RouteError {
    /// `namespace/name` of the object.
    pub route: String,
    /// What is wrong.
    pub reason: String,
}

/// Where an API's definition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A `ProxyRoute` object (read-only through `/v3/apis`).
    Manifest,
    /// RIG's `PROXY_CONFIG_FILE` or `/v3/apis`.
    Rig,
}

/// Where matching requests go. New kinds of target are new variants; the handler dispatches on
/// this enum.
#[derive(Debug, Clone)]
pub enum Target {
    /// Forward to an HTTP backend.
    Http(HttpTarget),
    /// Produce a CloudEvent to a Kafka topic.
    Kafka {
        /// The topic.
        topic: String,
        /// Wrap a plain JSON body into a CloudEvent (beyond RIG, its issue #310).
        wrap_plain_json: bool,
        /// The `type` of wrapped events; `None`: `<METHOD> <path>`.
        wrap_event_type: Option<String>,
    },
    /// A RIG target kind this gateway does not serve (`kinesis`, `nats`): answered 501.
    Unsupported {
        /// RIG's name of the kind.
        kind: String,
    },
}

impl Target {
    /// The `target` metric label (RIG's spelling).
    pub fn label(&self) -> &str {
        match self {
            Target::Http(_) => "http",
            Target::Kafka { .. } => "kafka",
            Target::Unsupported { kind } => kind,
        }
    }
}

/// An HTTP backend: where requests are sent, and what `host` they carry.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// `http` or `https` (TLS).
    pub scheme: http::uri::Scheme,
    /// `host:port`.
    pub authority: http::uri::Authority,
    /// The `host` header sent upstream: the authority.
    pub host: HeaderValue,
    /// Speak HTTP/2 only: prior knowledge (h2c) on `http`, ALPN `h2` on `https`. Otherwise
    /// HTTP/1.1 on `http`, and on `https` whatever ALPN settles (`h2` preferred).
    pub http2: bool,
    /// The upstream connection pool's key for this target ([`super::pool::Key`]).
    pub pool_key: super::pool::Key,
}

impl HttpTarget {
    /// Parse a base URL `http[s]://host[:port]` (a path, query or fragment is refused).
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("{url:?} needs a scheme (http://)"))?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(format!("{url:?}: the scheme must be http:// or https://"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{url:?} needs a host"))?;
        if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
            return Err(format!(
                "{url:?}: the base URL takes no path or query (the request's are appended)"
            ));
        }
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| format!("{url:?}: the host is not a valid header value"))?;
        let pool_key = super::pool::Key::new(&authority);
        Ok(Self {
            scheme,
            authority,
            host,
            http2: false,
            pool_key,
        })
    }
}

/// Where the client's response comes from (RIG's `response_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFrom {
    /// The target's own answer.
    Http,
    /// A later `POST /v3/responses`.
    HttpAsync,
    /// A correlated Kafka message.
    Kafka,
    /// A RIG source this gateway does not serve (`kinesis`, `nats`): answered 501.
    Unsupported,
}

impl ResponseFrom {
    /// The `response_from` metric label (RIG's spelling).
    pub fn label(self) -> &'static str {
        match self {
            ResponseFrom::Http => "http",
            ResponseFrom::HttpAsync => "http_async",
            ResponseFrom::Kafka => "kafka",
            ResponseFrom::Unsupported => "unsupported",
        }
    }
}

/// Where a secured endpoint reads JWTs; a request passes with at least one valid token.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// The header: `authorization` (`Bearer` tokens) or an `x-…` header (raw token).
    pub header: Option<HeaderName>,
    /// The query parameter (raw tokens, comma-separated values allowed).
    pub query: Option<String>,
}

/// What endpoints of one API share.
#[derive(Debug)]
pub struct ApiShared {
    /// The API's id (`namespace/name` for manifests, RIG's `id` otherwise).
    pub id: String,
    /// The target.
    pub target: Target,
    /// The response source.
    pub response_from: ResponseFrom,
    /// How long to wait for the target's response head.
    pub timeout: Duration,
    /// Where secured endpoints read JWTs.
    pub auth: Auth,
    /// Headers added to (or replacing) the request's.
    pub add_headers: Vec<(HeaderName, HeaderValue)>,
}

/// One endpoint, ready to match.
#[derive(Debug)]
pub struct Endpoint {
    /// The endpoint's id.
    pub id: String,
    /// The method it matches (`HEAD` requests also match `GET` endpoints).
    pub method: Method,
    /// The regex as configured (the metric's `path` label).
    pub path_regex: String,
    /// Anchored, case-insensitive.
    pub regex: Regex,
    /// Upstream path with `\1`… for capture groups; `None` keeps the request path.
    pub replacement: Option<String>,
    /// Whether a valid JWT is required.
    pub secured: bool,
    /// Whether the API's added headers apply (RIG's per-endpoint `transform_request_headers`).
    pub add_headers: bool,
    /// A RIG target/response this endpoint overrides for itself (RIG sets these per endpoint).
    pub target: Option<Target>,
    /// Per-endpoint response source (RIG); `None`: the API's.
    pub response_from: Option<ResponseFrom>,
    /// The endpoint's request counters.
    pub counters: Arc<EndpointCounters>,
}

impl Endpoint {
    /// The effective target.
    pub fn target<'a>(&'a self, api: &'a ApiShared) -> &'a Target {
        self.target.as_ref().unwrap_or(&api.target)
    }

    /// The effective response source.
    pub fn response_from(&self, api: &ApiShared) -> ResponseFrom {
        self.response_from.unwrap_or(api.response_from)
    }

    /// The upstream path for a request path this endpoint matched.
    pub fn rewrite(&self, path: &str) -> String {
        let Some(replacement) = &self.replacement else {
            return path.to_owned();
        };
        let Some(caps) = self.regex.captures(path) else {
            return path.to_owned();
        };
        expand(replacement, |i| caps.get(i).map(|m| m.as_str()))
    }
}

/// Replace `\N` (one or more digits) in `replacement` with capture group N (empty when the group
/// did not take part); any other character, including a lone `\`, is copied.
pub fn expand<'a>(replacement: &str, group: impl Fn(usize) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(replacement.len() + 32);
    let mut chars = replacement.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            let start = i + 1;
            let mut end = start;
            while let Some(&(j, d)) = chars.peek() {
                if d.is_ascii_digit() {
                    end = j + 1;
                    chars.next();
                } else {
                    break;
                }
            }
            if end > start {
                if let Ok(n) = replacement[start..end].parse::<usize>() {
                    out.push_str(group(n).unwrap_or(""));
                }
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// One compiled API.
#[derive(Debug)]
pub struct Api {
    /// Shared settings.
    pub shared: ApiShared,
    /// Its endpoints, in definition order.
    pub endpoints: Vec<Endpoint>,
    /// Where it comes from.
    pub origin: Origin,
    /// The definition in RIG's format, as `GET /v3/apis` shows it.
    pub definition: serde_json::Value,
}

/// All endpoints in match order.
#[derive(Debug, Default)]
pub struct Table {
    apis: Vec<Arc<Api>>,
}

/// The outcome of routing one request.
#[derive(Debug)]
pub enum Found<'a> {
    /// This endpoint of this API.
    Endpoint(&'a Api, &'a Endpoint),
    /// An endpoint matched whose method the gateway cannot proxy (RIG's 405).
    MethodNotAllowed,
    /// Nothing matched.
    NotFound,
}

/// The methods the gateway proxies (RIG's list).
fn proxyable(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET
            | Method::POST
            | Method::PUT
            | Method::PATCH
            | Method::DELETE
            | Method::HEAD
            | Method::OPTIONS
    )
}

impl Table {
    /// A table of `apis`, in this order.
    pub fn new(apis: Vec<Arc<Api>>) -> Self {
        Self { apis }
    }

    /// The APIs, in match order.
    pub fn apis(&self) -> &[Arc<Api>] {
        &self.apis
    }

    /// The first endpoint whose method and path regex match (a `HEAD` request also matches
    /// `GET` endpoints, as RIG, which turns `HEAD` into `GET`).
    pub fn find(&self, method: &Method, path: &str) -> Found<'_> {
        for api in &self.apis {
            for endpoint in &api.endpoints {
                let method_ok = endpoint.method == *method
                    || (*method == Method::HEAD && endpoint.method == Method::GET);
                if method_ok && endpoint.regex.is_match(path) {
                    if !proxyable(method) {
                        return Found::MethodNotAllowed;
                    }
                    return Found::Endpoint(api, endpoint);
                }
            }
        }
        Found::NotFound
    }
}

/// Compile an anchored, case-insensitive path regex.
pub fn compile_regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .case_insensitive(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| e.to_string())
}

/// Parse a duration such as `5s`, `1500ms`, `1m` (the CRD's `response.timeout`).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let bad = || format!("timeout {text:?} must be a number with ms, s or m, e.g. 5s");
    let (number, unit) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000)
    } else {
        return Err(bad());
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(bad());
    }
    Ok(Duration::from_millis(n.saturating_mul(unit)))
}

/// Parse `add_headers` into typed pairs.
pub fn parse_headers<'a>(
    headers: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    headers
        .into_iter()
        .map(|(k, v)| {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("{k:?} is not a valid header name"))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("the value of header {k:?} is not a valid header value"))?;
            Ok((name, value))
        })
        .collect()
}

/// The header an auth setting names: `Authorization` or an `x-…` header.
pub fn auth_header(name: &str) -> Result<HeaderName, String> {
    let lower = name.to_ascii_lowercase();
    if lower != "authorization" && !lower.starts_with("x-") {
        return Err(format!(
            "auth header {name:?} must be Authorization or an x- header"
        ));
    }
    HeaderName::from_bytes(lower.as_bytes())
        .map_err(|_| format!("auth header {name:?} is not a valid header name"))
}

/// Compile the `ProxyRoute` objects, ordered by namespace/name.
pub fn from_manifests(
    routes: &[ProxyRoute],
    metrics: &ProxyMetrics,
) -> Result<Vec<Arc<Api>>, RouteError> {
    let mut sorted: Vec<&ProxyRoute> = routes.iter().collect();
    sorted.sort_by_key(|r| manifest_id(r));
    sorted
        .into_iter()
        .map(|r| compile_manifest(r, metrics).map(Arc::new))
        .collect()
}

/// `namespace/name` (`default` when the manifest names no namespace).
pub fn manifest_id(route: &ProxyRoute) -> String {
    format!(
        "{}/{}",
        route.metadata.namespace.as_deref().unwrap_or("default"),
        route.metadata.name.as_deref().unwrap_or_default()
    )
}

fn compile_manifest(route: &ProxyRoute, metrics: &ProxyMetrics) -> Result<Api, RouteError> {
    let id = manifest_id(route);
    let err = |reason: String| RouteError {
        route: id.clone(),
        reason,
    };
    let spec = &route.spec;
    if spec.endpoints.is_empty() {
        return Err(err("spec.endpoints must not be empty".into()));
    }
    let target =
        match spec.target.kind {
            TargetKind::Http => {
                let url =
                    spec.target.url.as_deref().ok_or_else(|| {
                        err("spec.target.url is required for an Http target".into())
                    })?;
                let mut target =
                    HttpTarget::parse(url).map_err(|e| err(format!("spec.target.url: {e}")))?;
                target.http2 = spec.target.http2.unwrap_or(false);
                Target::Http(target)
            }
            TargetKind::Kafka => Target::Kafka {
                topic: spec.target.topic.clone().ok_or_else(|| {
                    err("spec.target.topic is required for a Kafka target".into())
                })?,
                wrap_plain_json: spec.target.wrap_plain_json,
                wrap_event_type: spec.target.wrap_event_type.clone(),
            },
        };
    let response_from = match spec.response.from {
        proxy_route::ResponseFrom::Http => ResponseFrom::Http,
        proxy_route::ResponseFrom::HttpAsync => ResponseFrom::HttpAsync,
        proxy_route::ResponseFrom::Kafka => ResponseFrom::Kafka,
    };
    let timeout =
        parse_timeout(&spec.response.timeout).map_err(|e| err(format!("spec.response.{e}")))?;
    let auth = match &spec.auth {
        Some(a) => Auth {
            header: a
                .header
                .as_deref()
                .map(auth_header)
                .transpose()
                .map_err(|e| err(format!("spec.auth: {e}")))?,
            query: a.query_parameter.clone(),
        },
        None => Auth::default(),
    };
    let add_headers = parse_headers(&spec.add_request_headers)
        .map_err(|e| err(format!("spec.addRequestHeaders: {e}")))?;
    let mut endpoints = Vec::with_capacity(spec.endpoints.len());
    for (i, e) in spec.endpoints.iter().enumerate() {
        if spec.endpoints[..i].iter().any(|other| other.id == e.id) {
            return Err(err(format!("endpoint id {:?} is not unique", e.id)));
        }
        if e.secured && auth.header.is_none() && auth.query.is_none() {
            return Err(err(format!(
                "endpoint {:?} is secured: spec.auth must name a header or a queryParameter",
                e.id
            )));
        }
        let method = method_of(e.method);
        let regex = compile_regex(&e.path_regex)
            .map_err(|reason| err(format!("endpoint {:?}: pathRegex: {reason}", e.id)))?;
        endpoints.push(Endpoint {
            counters: metrics.endpoint(
                &method,
                &e.path_regex,
                target.label(),
                response_from.label(),
            ),
            id: e.id.clone(),
            method,
            path_regex: e.path_regex.clone(),
            regex,
            replacement: e.path_replacement.clone(),
            secured: e.secured,
            add_headers: true,
            target: None,
            response_from: None,
        });
    }
    let definition = manifest_definition(&id, route);
    Ok(Api {
        shared: ApiShared {
            id,
            target,
            response_from,
            timeout,
            auth,
            add_headers,
        },
        endpoints,
        origin: Origin::Manifest,
        definition,
    })
}

fn method_of(method: proxy_route::Method) -> Method {
    match method {
        proxy_route::Method::GET => Method::GET,
        proxy_route::Method::POST => Method::POST,
        proxy_route::Method::PUT => Method::PUT,
        proxy_route::Method::PATCH => Method::PATCH,
        proxy_route::Method::DELETE => Method::DELETE,
        proxy_route::Method::HEAD => Method::HEAD,
        proxy_route::Method::OPTIONS => Method::OPTIONS,
    }
}

/// A `ProxyRoute` in RIG's API definition format, for `GET /v3/apis` (marked
/// `"managed_by": "ProxyRoute"`).
fn manifest_definition(id: &str, route: &ProxyRoute) -> serde_json::Value {
    let spec = &route.spec;
    let response_from = match spec.response.from {
        proxy_route::ResponseFrom::Http => "http",
        proxy_route::ResponseFrom::HttpAsync => "http_async",
        proxy_route::ResponseFrom::Kafka => "kafka",
    };
    let target = match spec.target.kind {
        TargetKind::Http => "http",
        TargetKind::Kafka => "kafka",
    };
    let endpoints: Vec<serde_json::Value> = spec
        .endpoints
        .iter()
        .map(|e| {
            let mut v = serde_json::json!({
                "id": e.id,
                "method": method_of(e.method).as_str(),
                "path_regex": e.path_regex,
                "secured": e.secured,
                "transform_request_headers": !spec.add_request_headers.is_empty(),
                "target": target,
                "response_from": response_from,
            });
            if let Some(r) = &e.path_replacement {
                v["path_replacement"] = r.clone().into();
            }
            if let Some(t) = &spec.target.topic {
                v["topic"] = t.clone().into();
            }
            v
        })
        .collect();
    let auth = spec.auth.as_ref();
    let (target_url, port) = spec
        .target
        .url
        .as_deref()
        .and_then(|u| HttpTarget::parse(u).ok())
        .map(|t| {
            (
                format!("{}://{}", t.scheme, t.authority.host()),
                t.authority
                    .port_u16()
                    .unwrap_or(if t.scheme == http::uri::Scheme::HTTPS {
                        443
                    } else {
                        80
                    }),
            )
        })
        .unwrap_or_default();
    serde_json::json!({
        "id": id,
        "name": route.metadata.name.as_deref().unwrap_or_default(),
        "managed_by": "ProxyRoute",
        "active": true,
        "auth_type": if auth.is_some() { "jwt" } else { "none" },
        "auth": {
            "use_header": auth.is_some_and(|a| a.header.is_some()),
            "header_name": auth.and_then(|a| a.header.clone()).unwrap_or_default(),
            "use_query": auth.is_some_and(|a| a.query_parameter.is_some()),
            "query_name": auth.and_then(|a| a.query_parameter.clone()).unwrap_or_default(),
        },
        "versioned": false,
        "version_data": {"default": {
            "transform_request_headers": {"add_headers": spec.add_request_headers},
            "endpoints": endpoints,
        }},
        "proxy": {"use_env": false, "target_url": target_url, "port": port},
        "response_timeout": spec.response.timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(yaml: &str) -> ProxyRoute {
        serde_yaml::from_str(yaml).expect("route yaml")
    }

    const BOOKS: &str = "apiVersion: rig.dev/v1alpha1\nkind: ProxyRoute\nmetadata: {name: books, namespace: shop}\nspec:\n  endpoints:\n    - {id: get, method: GET, pathRegex: '/books/(.+)', pathReplacement: '/v2/books/\\1'}\n    - {id: all, method: GET, pathRegex: '/books/.*'}\n  target: {kind: Http, url: 'http://127.0.0.1:9'}\n";

    #[test]
    fn first_match_wins_anchored_and_case_insensitive() {
        let metrics = ProxyMetrics::default();
        let apis = from_manifests(&[route(BOOKS)], &metrics).expect("compiles");
        let table = Table::new(apis);
        match table.find(&Method::GET, "/BOOKS/42") {
            Found::Endpoint(api, e) => {
                assert_eq!(api.shared.id, "shop/books");
                assert_eq!(e.id, "get");
                assert_eq!(e.rewrite("/BOOKS/42"), "/v2/books/42");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            table.find(&Method::GET, "/x/books/1"),
            Found::NotFound
        ));
        assert!(matches!(
            table.find(&Method::POST, "/books/1"),
            Found::NotFound
        ));
        assert!(matches!(
            table.find(&Method::HEAD, "/books/1"),
            Found::Endpoint(_, _)
        ));
    }

    #[test]
    fn expand_replaces_groups_and_keeps_other_text() {
        let groups = ["/a/b", "a", "b"];
        let g = |i: usize| groups.get(i).copied();
        assert_eq!(expand("/x/\\2/\\1", g), "/x/b/a");
        assert_eq!(expand("/x/\\9/y", g), "/x//y");
        assert_eq!(expand("/x\\y", g), "/x\\y");
        assert_eq!(expand("\\", g), "\\");
    }

    #[test]
    fn timeouts_and_bad_routes() {
        assert_eq!(parse_timeout("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_timeout("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_timeout("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_timeout("5").is_err());
        assert!(parse_timeout("0s").is_err());
        let metrics = ProxyMetrics::default();
        let bad = BOOKS.replace("'/books/(.+)'", "'/books/(.+'");
        let err = from_manifests(&[route(&bad)], &metrics).expect_err("bad regex");
        assert!(err.to_string().contains("shop/books"), "{err}");
        let secured = BOOKS.replace("id: all,", "id: all, secured: true,");
        let err = from_manifests(&[route(&secured)], &metrics).expect_err("no auth");
        assert!(err.to_string().contains("spec.auth"), "{err}");
        let ftp = BOOKS.replace("http://127", "ftp://127");
        assert!(from_manifests(&[route(&ftp)], &metrics).is_err());
    }

    #[test]
    fn https_targets_and_the_http2_opt_in() {
        let metrics = ProxyMetrics::default();
        let target = |yaml: &str| {
            let apis = from_manifests(&[route(yaml)], &metrics).expect("compiles");
            match &apis[0].shared.target {
                Target::Http(t) => t.clone(),
                other => panic!("{other:?}"),
            }
        };
        let t = target(&BOOKS.replace("'http://127.0.0.1:9'", "'https://books.example'"));
        assert_eq!(t.scheme, http::uri::Scheme::HTTPS);
        assert_eq!(t.host, "books.example");
        assert!(!t.http2, "HTTP/2 on https:// is negotiated, not forced");
        let h2c = BOOKS.replace(
            "url: 'http://127.0.0.1:9'",
            "url: 'http://127.0.0.1:9', http2: true",
        );
        let t = target(&h2c);
        assert!(t.http2);
        assert_eq!(t.scheme, http::uri::Scheme::HTTP);
        // RIG definitions have no such field: HTTP/1.1 (or ALPN on https).
        let rig = HttpTarget::parse("https://10.0.0.1:8443").expect("https");
        assert!(!rig.http2);
        assert_eq!(rig.authority, "10.0.0.1:8443");
        let apis = from_manifests(
            &[route(
                &BOOKS.replace("'http://127.0.0.1:9'", "'https://b.example'"),
            )],
            &metrics,
        )
        .expect("compiles");
        assert_eq!(apis[0].definition["proxy"]["port"], 443);
        assert_eq!(
            apis[0].definition["proxy"]["target_url"],
            "https://b.example"
        );
    }
}
