//! The proxy's route table: APIs from `ProxyRoute`s (compiled once by the one compiler,
//! [`rig_crds::compile`]) and from RIG's API definitions (`PROXY_CONFIG_FILE`, `/v3/apis`,
//! [`super::rig`], whose regexes are judged by the same [`compile_regex`]) in one ordered list of
//! endpoints.
//!
//! Everything that can be prepared is prepared once per configuration: regexes are compiled
//! (anchored, case-insensitive), targets parsed into scheme and authority, added headers parsed
//! into typed names and values, and each endpoint gets its metric counters. A request then only
//! walks the list and runs the regexes ([`Table::find`]). First match wins: manifests ordered by
//! namespace/name, then RIG's definitions in file (or creation) order.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use regex::Regex;
use rig_crds::compile::{self, ProxyApi};
use rig_crds::proxy_route::{self, TargetKind};

use super::metrics::{EndpointCounters, ProxyMetrics};

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
    /// Parse a base URL `http[s]://host[:port]` (a path, query or fragment is refused), as the
    /// compiler does.
    pub fn parse(url: &str) -> Result<Self, String> {
        compile::HttpTarget::parse(url).map(|t| Self::from_compiled(&t))
    }

    fn from_compiled(target: &compile::HttpTarget) -> Self {
        Self {
            scheme: target.scheme.clone(),
            authority: target.authority.clone(),
            host: target.host.clone(),
            http2: target.http2,
            pool_key: super::pool::Key::new(&target.authority),
        }
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

/// Where a secured endpoint reads JWTs (the compiler's type; RIG definitions build it too).
pub use rig_crds::compile::Auth;

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

/// Compile a path regex the one way (anchored, case-insensitive, bounded, and unable to escape
/// the anchoring: [`compile::path_regex`]).
pub fn compile_regex(pattern: &str) -> Result<Regex, String> {
    compile::path_regex(pattern).map_err(|e| e.to_string())
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
    compile::proxy_auth_header(name).map_err(|e| format!("auth header {e}"))
}

/// The compiled `ProxyRoute`s (already in match order), with their metric counters.
pub fn from_compiled(routes: &[Arc<ProxyApi>], metrics: &ProxyMetrics) -> Vec<Arc<Api>> {
    routes
        .iter()
        .map(|route| Arc::new(from_route(route, metrics)))
        .collect()
}

fn from_route(route: &ProxyApi, metrics: &ProxyMetrics) -> Api {
    let target = match &route.target {
        compile::Target::Http(t) => Target::Http(HttpTarget::from_compiled(t)),
        compile::Target::Kafka {
            topic,
            wrap_plain_json,
            wrap_event_type,
        } => Target::Kafka {
            topic: topic.clone(),
            wrap_plain_json: *wrap_plain_json,
            wrap_event_type: wrap_event_type.clone(),
        },
    };
    let response_from = match route.response_from {
        proxy_route::ResponseFrom::Http => ResponseFrom::Http,
        proxy_route::ResponseFrom::HttpAsync => ResponseFrom::HttpAsync,
        proxy_route::ResponseFrom::Kafka => ResponseFrom::Kafka,
    };
    let endpoints = route
        .endpoints
        .iter()
        .map(|e| Endpoint {
            counters: metrics.endpoint(
                &e.method,
                &e.path_regex,
                target.label(),
                response_from.label(),
            ),
            id: e.id.clone(),
            method: e.method.clone(),
            path_regex: e.path_regex.clone(),
            regex: e.regex.clone(),
            replacement: e.replacement.clone(),
            secured: e.secured,
            add_headers: true,
            target: None,
            response_from: None,
        })
        .collect();
    Api {
        definition: manifest_definition(route),
        shared: ApiShared {
            id: route.id.clone(),
            target,
            response_from,
            timeout: route.timeout,
            auth: route.auth.clone(),
            add_headers: route.add_headers.clone(),
        },
        endpoints,
        origin: Origin::Manifest,
    }
}

/// A `ProxyRoute` in RIG's API definition format, for `GET /v3/apis` (marked
/// `"managed_by": "ProxyRoute"`).
fn manifest_definition(route: &ProxyApi) -> serde_json::Value {
    let id = &route.id;
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
                "method": compile::proxy_method(e.method).as_str(),
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
        "name": route.name,
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

    fn route(yaml: &str) -> rig_crds::ProxyRoute {
        serde_yaml::from_str(yaml).expect("route yaml")
    }

    /// The routes through the one compiler, as the data plane compiles them.
    fn from_manifests(
        routes: &[rig_crds::ProxyRoute],
        metrics: &ProxyMetrics,
    ) -> Result<Vec<Arc<Api>>, String> {
        let manifests = crate::manifests::Manifests {
            proxy_routes: routes.to_vec(),
            ..Default::default()
        };
        let compiled = compile::compile(
            &manifests.objects(),
            "2026-01-01T00:00:00Z".parse().expect("time"),
        );
        let rejected: Vec<String> = compiled.rejected().map(ToString::to_string).collect();
        if !rejected.is_empty() {
            return Err(rejected.join("; "));
        }
        Ok(from_compiled(&compiled.config.proxy_routes, metrics))
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
        let metrics = ProxyMetrics::default();
        let slow = BOOKS.replace("  target:", "  response: {timeout: 1500ms}\n  target:");
        let apis = from_manifests(&[route(&slow)], &metrics).expect("compiles");
        assert_eq!(apis[0].shared.timeout, Duration::from_millis(1500));
        let zero = BOOKS.replace("  target:", "  response: {timeout: 0s}\n  target:");
        let err = from_manifests(&[route(&zero)], &metrics).expect_err("zero timeout");
        assert!(err.contains("InvalidTimeout"), "{err}");
        let metrics = ProxyMetrics::default();
        let bad = BOOKS.replace("'/books/(.+)'", "'/books/(.+'");
        let err = from_manifests(&[route(&bad)], &metrics).expect_err("bad regex");
        assert!(err.contains("shop/books"), "{err}");
        let secured = BOOKS.replace("id: all,", "id: all, secured: true,");
        let err = from_manifests(&[route(&secured)], &metrics).expect_err("no auth");
        assert!(err.contains("MissingAuth"), "{err}");
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
