//! `ProxyRoute`: one API of the gateway (RIG's proxy API definition, as a custom resource).
//!
//! Endpoints are matched by method and an anchored, case-insensitive path regex (first match wins
//! across all routes, ordered by namespace/name). The target is an HTTP backend or a Kafka topic;
//! the response comes from the target (`Http`), from a later `POST /v3/responses` (`HttpAsync`) or
//! from a correlated Kafka message (`Kafka`). Regex validity is checked by the operator, which
//! reports it on the object's `Accepted` condition.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::RigStatus;

/// Specification of a `ProxyRoute`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rig.dev",
    version = "v1alpha1",
    kind = "ProxyRoute",
    namespaced,
    status = "RigStatus",
    shortname = "pr",
    category = "rig",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target.kind"}"#,
    printcolumn = r#"{"name":"Response","type":"string","jsonPath":".spec.response.from"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Programmed","type":"string","jsonPath":".status.programmed"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.response.from != 'HttpAsync' || self.target.kind == 'Http'").message("response.from HttpAsync needs an Http target (the backend answers 202 and POSTs the response later)"))]
#[x_kube(validation = Rule::new("!self.endpoints.exists(e, e.secured) || has(self.auth)").message("secured endpoints need spec.auth (where to read the JWT)"))]
pub struct ProxyRouteSpec {
    /// The endpoints of this API. At least one; ids are unique within the route.
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["id".into()]))]
    pub endpoints: Vec<Endpoint>,
    /// Where matching requests go.
    pub target: Target,
    /// Where the client's response comes from. Default: from the target, at once.
    #[serde(default)]
    pub response: Response,
    /// Where `secured` endpoints read the JWT. Required when any endpoint is secured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<JwtAuth>,
    /// Headers added to (or replacing) the request's headers before it is forwarded or produced.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 256 && k.matches('^[A-Za-z0-9!#$%&*+.^_`|~-]+$'))").message("header names must be HTTP tokens of at most 256 characters"))]
    pub add_request_headers: BTreeMap<String, String>,
}

/// One endpoint: a method and a path pattern.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// Identifier, unique within the route (used in metrics and error maps).
    #[schemars(length(min = 1, max = 128))]
    pub id: String,
    /// HTTP method, upper case.
    pub method: Method,
    /// Path regex, anchored (`^…$` is implied) and case-insensitive, e.g. `/books/(.+)`.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('/') || self.startsWith('^/')").message("pathRegex must match from the leading '/'"))]
    pub path_regex: String,
    /// Replacement path for the upstream request; `\1`…`\9` insert capture groups,
    /// e.g. `/v2/books/\1`. Default: the request path unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub path_replacement: Option<String>,
    /// Whether a valid, non-revoked JWT is required (read as configured in `spec.auth`).
    #[serde(default)]
    pub secured: bool,
}

/// HTTP methods a route can match.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum Method {
    /// `GET`
    GET,
    /// `POST`
    POST,
    /// `PUT`
    PUT,
    /// `PATCH`
    PATCH,
    /// `DELETE`
    DELETE,
    /// `HEAD`
    HEAD,
    /// `OPTIONS`
    OPTIONS,
}

/// The target of a route: an HTTP backend or a Kafka topic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.kind != 'Kafka' || has(self.topic)").message("topic is required when the target kind is Kafka"))]
#[x_kube(validation = Rule::new("self.kind != 'Http' || has(self.url)").message("url is required when the target kind is Http"))]
#[x_kube(validation = Rule::new("self.kind == 'Kafka' || !has(self.topic)").message("topic is only allowed when the target kind is Kafka"))]
#[x_kube(validation = Rule::new("self.kind == 'Http' || !has(self.http2)").message("http2 is only allowed when the target kind is Http"))]
pub struct Target {
    /// `Http` (forward the request) or `Kafka` (produce it as a CloudEvent).
    pub kind: TargetKind,
    /// Backend base URL for `Http`, e.g. `http://books.default.svc:8080` (path and query of the
    /// request are appended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048), regex(pattern = r"^https?://[^/?#]+"))]
    pub url: Option<String>,
    /// For `Http`: speak HTTP/2 only to the backend — with prior knowledge (h2c) on `http://`,
    /// through ALPN `h2` on `https://` — as gRPC-style backends need. Default: HTTP/1.1 on
    /// `http://`; on `https://` HTTP/2 when the backend offers it, else HTTP/1.1. Connections are
    /// pooled either way (one multiplexed connection per backend with HTTP/2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2: Option<bool>,
    /// Topic for `Kafka`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub topic: Option<String>,
    /// For `Kafka`: accept a plain JSON body and wrap it into a CloudEvent (type
    /// `<method> <path>` unless `wrapEventType` is set). Default: only CloudEvent bodies, as RIG.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wrap_plain_json: bool,
    /// For `Kafka` with `wrapPlainJson`: the CloudEvent `type` of wrapped bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub wrap_event_type: Option<String>,
}

/// The two kinds of target.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// Forward to an HTTP backend.
    Http,
    /// Produce a CloudEvent to a Kafka topic.
    Kafka,
}

/// Where the response comes from, and how long to wait for it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Response {
    /// `Http`: the target's own response (for a Kafka target: 202 once the broker acknowledged).
    /// `HttpAsync`: the backend answers 202 and POSTs the response to `/v3/responses`.
    /// `Kafka`: a message with the request's `rig-correlation` header on a response topic.
    #[serde(default)]
    pub from: ResponseFrom,
    /// How long to wait for the response, e.g. `5s`, `1500ms`, `1m`. Beyond it the client gets 504.
    #[serde(default = "default_timeout")]
    #[schemars(regex(pattern = r"^[0-9]{1,6}(ms|s|m)$"))]
    pub timeout: String,
}

impl Default for Response {
    fn default() -> Self {
        Self {
            from: ResponseFrom::default(),
            timeout: default_timeout(),
        }
    }
}

/// RIG's default for `PROXY_RECV_TIMEOUT` and the `PROXY_*_RESPONSE_TIMEOUT`s.
fn default_timeout() -> String {
    "5s".to_owned()
}

/// RIG's `response_from`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResponseFrom {
    /// The target answers directly.
    #[default]
    Http,
    /// Correlated `POST /v3/responses`.
    HttpAsync,
    /// Correlated Kafka message.
    Kafka,
}

/// Where secured endpoints read the JWT. At least one of header and query parameter.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.header) || has(self.queryParameter)").message("auth needs a header, a queryParameter, or both"))]
pub struct JwtAuth {
    /// Header carrying the token: `Authorization` (as `Bearer <jwt>`) or an `x-…` header holding
    /// the raw token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("self.lowerAscii() == 'authorization' || self.lowerAscii().startsWith('x-')").message("header must be Authorization or an x- header"))]
    pub header: Option<String>,
    /// Query parameter carrying the raw token (comma-separated values allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub query_parameter: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http2_is_serialized_only_when_set_so_existing_snapshot_versions_stay() {
        let target: Target =
            serde_json::from_value(serde_json::json!({"kind": "Http", "url": "http://b:80"}))
                .expect("target");
        assert_eq!(target.http2, None);
        assert_eq!(
            serde_json::to_value(&target).expect("json"),
            serde_json::json!({"kind": "Http", "url": "http://b:80"}),
            "a target without http2 hashes as before the field existed"
        );
        let h2c: Target = serde_json::from_value(
            serde_json::json!({"kind": "Http", "url": "http://b:80", "http2": true}),
        )
        .expect("target");
        assert_eq!(h2c.http2, Some(true));
        assert_eq!(serde_json::to_value(&h2c).expect("json")["http2"], true);
    }
}
