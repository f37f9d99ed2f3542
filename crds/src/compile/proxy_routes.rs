//! `ProxyRoute` → one API of the proxy table: regexes built, target parsed, headers typed.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use regex::{Regex, RegexBuilder};

use crate::ProxyRouteSpec;
use crate::proxy_route::{self, ResponseFrom, TargetKind};

use super::{Problems, one_line};

/// Upper bound on a compiled path regex, so one object cannot make every data plane allocate a
/// huge automaton (the `regex` crate's default is 10 MiB per regex).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One compiled `ProxyRoute`.
#[derive(Debug)]
pub struct ProxyApi {
    /// `namespace/name`.
    pub id: String,
    /// The object's name.
    pub name: String,
    /// Where matching requests go.
    pub target: Target,
    /// Where the client's response comes from.
    pub response_from: ResponseFrom,
    /// `response.timeout`.
    pub timeout: Duration,
    /// Where secured endpoints read JWTs.
    pub auth: Auth,
    /// `addRequestHeaders`, typed.
    pub add_headers: Vec<(HeaderName, HeaderValue)>,
    /// The endpoints, in definition order.
    pub endpoints: Vec<ProxyEndpoint>,
    /// The spec as accepted (for RIG's `GET /v3/apis` view).
    pub spec: ProxyRouteSpec,
}

/// Where a route's requests go.
#[derive(Debug, Clone)]
pub enum Target {
    /// An HTTP backend.
    Http(HttpTarget),
    /// A Kafka topic.
    Kafka {
        /// The topic.
        topic: String,
        /// Wrap a plain JSON body into a CloudEvent.
        wrap_plain_json: bool,
        /// The `type` of wrapped events; `None`: `<METHOD> <path>`.
        wrap_event_type: Option<String>,
    },
}

/// An HTTP backend's base URL, parsed.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// `host:port`.
    pub authority: http::uri::Authority,
    /// The `host` header sent upstream: the authority.
    pub host: HeaderValue,
    /// Speak HTTP/2 only (`target.http2`).
    pub http2: bool,
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
        Ok(Self {
            scheme,
            authority,
            host,
            http2: false,
        })
    }
}

/// Where secured endpoints read JWTs; a request passes with at least one valid token.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// The header: `authorization` (`Bearer` tokens) or an `x-…` header (raw token).
    pub header: Option<HeaderName>,
    /// The query parameter (raw tokens).
    pub query: Option<String>,
}

/// One endpoint, ready to match.
#[derive(Debug)]
pub struct ProxyEndpoint {
    /// The endpoint's id.
    pub id: String,
    /// The method it matches.
    pub method: Method,
    /// The regex as configured.
    pub path_regex: String,
    /// Anchored, case-insensitive ([`path_regex`]).
    pub regex: Regex,
    /// Upstream path with `\1`… for capture groups; `None` keeps the request path.
    pub replacement: Option<String>,
    /// Whether a valid JWT is required.
    pub secured: bool,
}

/// Compile one route; every problem found when it cannot be compiled.
pub(super) fn compile(id: &str, name: &str, spec: &ProxyRouteSpec) -> Result<ProxyApi, Problems> {
    let mut problems = Problems::default();
    if spec.endpoints.is_empty() {
        problems.add(
            "NoEndpoints",
            "endpoints must name at least one endpoint".to_owned(),
        );
    }
    let target = target(spec, &mut problems);
    let auth = auth(spec, &mut problems);
    let mut endpoints = Vec::with_capacity(spec.endpoints.len());
    for (i, e) in spec.endpoints.iter().enumerate() {
        if spec.endpoints[..i].iter().any(|other| other.id == e.id) {
            problems.add(
                "DuplicateEndpointId",
                format!("endpoint id {:?} is used twice", e.id),
            );
        }
        if e.secured && auth.header.is_none() && auth.query.is_none() {
            problems.add(
                "MissingAuth",
                format!(
                    "endpoint {:?} is secured: auth must name a header or a queryParameter",
                    e.id
                ),
            );
        }
        if let Some(endpoint) = endpoint(e, &mut problems) {
            endpoints.push(endpoint);
        }
    }
    if spec.response.from == ResponseFrom::HttpAsync && spec.target.kind != TargetKind::Http {
        problems.add(
            "InvalidResponse",
            "response.from HttpAsync needs an Http target".to_owned(),
        );
    }
    let timeout = match parse_timeout(&spec.response.timeout) {
        Ok(timeout) => timeout,
        Err(why) => {
            problems.add(
                "InvalidTimeout",
                format!("response.timeout {:?}: {why}", spec.response.timeout),
            );
            Duration::ZERO
        }
    };
    let mut add_headers = Vec::with_capacity(spec.add_request_headers.len());
    for (key, value) in &spec.add_request_headers {
        match (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => add_headers.push((name, value)),
            (Err(_), _) => problems.add(
                "InvalidHeader",
                format!("addRequestHeaders: {key:?} is not a valid header name"),
            ),
            (_, Err(_)) => problems.add(
                "InvalidHeader",
                format!("addRequestHeaders: the value of {key:?} is not a valid header value"),
            ),
        }
    }
    match (target, problems.is_empty()) {
        (Some(target), true) => Ok(ProxyApi {
            id: id.to_owned(),
            name: name.to_owned(),
            target,
            response_from: spec.response.from,
            timeout,
            auth,
            add_headers,
            endpoints,
            spec: spec.clone(),
        }),
        _ => Err(problems),
    }
}

fn target(spec: &ProxyRouteSpec, problems: &mut Problems) -> Option<Target> {
    let t = &spec.target;
    match t.kind {
        TargetKind::Http => {
            if t.topic.is_some() {
                problems.add(
                    "InvalidTarget",
                    "target.topic is only allowed when the target kind is Kafka".to_owned(),
                );
            }
            let Some(url) = t.url.as_deref() else {
                problems.add(
                    "InvalidTarget",
                    "target.url is required when the target kind is Http".to_owned(),
                );
                return None;
            };
            match HttpTarget::parse(url) {
                Ok(mut target) => {
                    target.http2 = t.http2.unwrap_or(false);
                    Some(Target::Http(target))
                }
                Err(why) => {
                    problems.add("InvalidTarget", format!("target.url: {why}"));
                    None
                }
            }
        }
        TargetKind::Kafka => {
            if t.http2.is_some() {
                problems.add(
                    "InvalidTarget",
                    "target.http2 is only allowed when the target kind is Http".to_owned(),
                );
            }
            let Some(topic) = t.topic.clone() else {
                problems.add(
                    "InvalidTarget",
                    "target.topic is required when the target kind is Kafka".to_owned(),
                );
                return None;
            };
            if !super::event_routes::valid_topic(&topic) {
                problems.add(
                    "InvalidTarget",
                    format!("target.topic {topic:?} is not a Kafka topic name"),
                );
            }
            Some(Target::Kafka {
                topic,
                wrap_plain_json: t.wrap_plain_json,
                wrap_event_type: t.wrap_event_type.clone(),
            })
        }
    }
}

fn auth(spec: &ProxyRouteSpec, problems: &mut Problems) -> Auth {
    let Some(a) = &spec.auth else {
        return Auth::default();
    };
    if a.header.is_none() && a.query_parameter.is_none() {
        problems.add(
            "InvalidAuth",
            "auth needs a header, a queryParameter, or both".to_owned(),
        );
    }
    let header = a
        .header
        .as_deref()
        .and_then(|name| match auth_header(name) {
            Ok(header) => Some(header),
            Err(why) => {
                problems.add("InvalidAuth", format!("auth.header: {why}"));
                None
            }
        });
    Auth {
        header,
        query: a.query_parameter.clone().filter(|q| !q.is_empty()),
    }
}

/// The header an auth setting names: `Authorization` or an `x-…` header.
pub fn auth_header(name: &str) -> Result<HeaderName, String> {
    let lower = name.to_ascii_lowercase();
    if lower != "authorization" && !lower.starts_with("x-") {
        return Err(format!("{name:?} must be Authorization or an x- header"));
    }
    HeaderName::from_bytes(lower.as_bytes()).map_err(|_| format!("{name:?} is not a header name"))
}

fn endpoint(e: &proxy_route::Endpoint, problems: &mut Problems) -> Option<ProxyEndpoint> {
    // The CRD's CEL rule, here too for manifests that never pass the apiserver.
    if !(e.path_regex.starts_with('/') || e.path_regex.starts_with("^/")) {
        problems.add(
            "InvalidPathRegex",
            format!(
                "endpoint {:?}: pathRegex {:?} must match from the leading '/'",
                e.id, e.path_regex
            ),
        );
        return None;
    }
    let regex = match path_regex(&e.path_regex) {
        Ok(regex) => regex,
        Err(error) => {
            problems.add(
                "InvalidPathRegex",
                format!(
                    "endpoint {:?}: pathRegex {:?} does not compile: {}",
                    e.id,
                    e.path_regex,
                    one_line(&error.to_string())
                ),
            );
            return None;
        }
    };
    if let Some(replacement) = &e.path_replacement {
        // `captures_len` counts the implicit whole-match group 0.
        let groups = regex.captures_len() - 1;
        for group in replacement_groups(replacement) {
            if group > groups {
                problems.add(
                    "InvalidPathReplacement",
                    format!(
                        "endpoint {:?}: pathReplacement {replacement:?} uses group \\{group}, \
                         but pathRegex {:?} has {groups} group(s)",
                        e.id, e.path_regex
                    ),
                );
            }
        }
    }
    Some(ProxyEndpoint {
        id: e.id.clone(),
        method: method(e.method),
        path_regex: e.path_regex.clone(),
        regex,
        replacement: e.path_replacement.clone(),
        secured: e.secured,
    })
}

/// The HTTP method of a spec's method.
pub fn method(method: proxy_route::Method) -> Method {
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

/// Compile a path regex the one way every path regex is judged and matched (`ProxyRoute`s, RIG's
/// API definitions, both modes): anchored at both ends (an explicit `^`/`$` is harmless),
/// case-insensitive, within [`REGEX_SIZE_LIMIT`].
///
/// The pattern must also compile on its own, so errors point into the user's text (not our
/// wrapper) and a pattern cannot escape the anchoring group (`/a)|(/b` is refused).
pub fn path_regex(pattern: &str) -> Result<Regex, regex::Error> {
    let build = |p: &str| {
        RegexBuilder::new(p)
            .case_insensitive(true)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
    };
    build(pattern)?;
    build(&format!("^(?:{pattern})$"))
}

/// The group numbers a `pathReplacement` references (`\0`…`\9`).
fn replacement_groups(replacement: &str) -> impl Iterator<Item = usize> + '_ {
    replacement
        .as_bytes()
        .windows(2)
        .filter(|w| w[0] == b'\\' && w[1].is_ascii_digit())
        .map(|w| usize::from(w[1] - b'0'))
}

/// Parse a route timeout: `<digits>(ms|s|m)`, more than zero.
pub fn parse_timeout(text: &str) -> Result<Duration, &'static str> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => return Err("a unit (ms, s or m) is required"),
    };
    let n: u64 = digits.parse().map_err(|_| "it must start with a number")?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err("the unit must be ms, s or m"),
    };
    if duration.is_zero() {
        return Err("it must be more than zero");
    }
    Ok(duration)
}
