//! RIG's API definition format (`PROXY_CONFIG_FILE`, `/v3/apis`): validation with RIG's
//! per-field error map, defaults, and compilation into the same [`Api`] as `ProxyRoute` objects.
//!
//! The error map is a JSON object: `"api"` for top-level fields, `"<api id>"` for the auth
//! settings, `"<api id>/<endpoint id>"` for an endpoint; each value a list of
//! `{"<field>": "<message>"}` with RIG's messages (`must be present`, `must be string`, ...).

use std::time::Duration;

use http::Method;
use serde_json::{Map, Value, json};

use super::metrics::ProxyMetrics;
use super::routes::{
    self, Api, ApiShared, Auth, Endpoint, HttpTarget, Origin, ResponseFrom, Target,
};

/// RIG's validation errors: key → list of `{field: message}`.
pub type ErrorMap = Map<String, Value>;

const PRESENT: &str = "must be present";
const STRING: &str = "must be string";
const NON_EMPTY: &str = "must have a length of at least 1";

/// Validation errors, collected in RIG's shape.
#[derive(Debug, Default)]
struct Errors(ErrorMap);

impl Errors {
    fn add(&mut self, key: &str, field: &str, message: impl Into<String>) {
        let entry = self
            .0
            .entry(key.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = entry {
            list.push(json!({ field: message.into() }));
        }
    }

    /// A required, non-empty string, as RIG's validation words it: anything but a string fails
    /// both `must be string` and `must have a length of at least 1`; `""` the second.
    fn string<'a>(&mut self, key: &str, obj: &'a Map<String, Value>, field: &str) -> &'a str {
        match obj.get(field) {
            Some(Value::String(s)) if s.is_empty() => {
                self.add(key, field, NON_EMPTY);
                ""
            }
            Some(Value::String(s)) => s,
            _ => {
                self.add(key, field, STRING);
                self.add(key, field, NON_EMPTY);
                ""
            }
        }
    }

    /// A value that must be present (RIG's presence rule: missing, `null` and `""` fail it).
    fn present<'a>(&mut self, key: &str, obj: &'a Map<String, Value>, field: &str) -> &'a str {
        match obj.get(field) {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(Value::String(_) | Value::Null) | None => {
                self.add(key, field, PRESENT);
                ""
            }
            Some(_) => {
                self.add(key, field, STRING);
                ""
            }
        }
    }

    /// An optional string (absent → `default`).
    fn opt_string<'a>(
        &mut self,
        key: &str,
        obj: &'a Map<String, Value>,
        field: &str,
        default: &'a str,
    ) -> &'a str {
        match obj.get(field) {
            None | Some(Value::Null) => default,
            Some(Value::String(s)) => s,
            Some(_) => {
                self.add(key, field, STRING);
                default
            }
        }
    }
}

fn bool_field(obj: &Map<String, Value>, field: &str) -> bool {
    obj.get(field).and_then(Value::as_bool).unwrap_or(false)
}

/// Parse a `PROXY_CONFIG_FILE` document: a JSON list of definitions. Every definition is
/// validated; the first invalid one (or a document that is not a list) is reported.
pub fn parse_list(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    default_timeout: Duration,
    metrics: &ProxyMetrics,
) -> Result<Vec<(Value, Api)>, ErrorMap> {
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        let mut errors = Errors::default();
        errors.add("api", "config", format!("must be valid JSON: {e}"));
        errors.0
    })?;
    let Value::Array(list) = doc else {
        let mut errors = Errors::default();
        errors.add("api", "config", "must be list");
        return Err(errors.0);
    };
    let mut out: Vec<(Value, Api)> = Vec::with_capacity(list.len());
    for item in list {
        // As sent first (see `as_sent`), then with the defaults.
        compile(&as_sent(item.clone()), env, default_timeout, metrics)?;
        let definition = with_defaults(item);
        let api = compile(&definition, env, default_timeout, metrics)?;
        if out.iter().any(|(_, a)| a.shared.id == api.shared.id) {
            let mut errors = Errors::default();
            errors.add(
                "api",
                "id",
                format!("must be unique: {} is defined twice", api.shared.id),
            );
            return Err(errors.0);
        }
        out.push((definition, api));
    }
    Ok(out)
}

/// RIG's defaults on create: `active`, `auth_type`, `auth`, `proxy.use_env`, `ref_number`,
/// `timestamp`, `versioned`; methods upper-cased. `auth_type: "jwt"` forces the header
/// `Authorization` (RIG).
pub fn with_defaults(definition: Value) -> Value {
    let mut definition = as_sent(definition);
    let Some(obj) = definition.as_object_mut() else {
        return definition;
    };
    obj.entry("active").or_insert(Value::Bool(true));
    obj.entry("auth_type").or_insert_with(|| "none".into());
    obj.entry("versioned").or_insert(Value::Bool(false));
    obj.entry("ref_number").or_insert_with(|| 0.into());
    obj.entry("timestamp").or_insert_with(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .into()
    });
    let jwt = obj.get("auth_type").and_then(Value::as_str) == Some("jwt");
    let auth = obj.entry("auth").or_insert_with(|| json!({}));
    if let Some(auth) = auth.as_object_mut() {
        auth.entry("use_header").or_insert(Value::Bool(false));
        auth.entry("header_name").or_insert_with(|| "".into());
        auth.entry("use_query").or_insert(Value::Bool(false));
        auth.entry("query_name").or_insert_with(|| "".into());
        if jwt {
            auth.insert("use_header".into(), Value::Bool(true));
            auth.insert("header_name".into(), "Authorization".into());
        }
    }
    if let Some(proxy) = obj.get_mut("proxy").and_then(Value::as_object_mut) {
        proxy.entry("use_env").or_insert(Value::Bool(false));
    }
    definition
}

/// A definition as sent, to be validated before any default fills a gap (RIG validates what the
/// client sent: `auth_type: "jwt"` with `use_header: true` and no `header_name` is refused, not
/// given `Authorization`). Only methods are upper-cased (`get` is `GET`, as RIG reads them).
pub fn as_sent(mut definition: Value) -> Value {
    if let Some(endpoints) = definition
        .get_mut("version_data")
        .and_then(|v| v.get_mut("default"))
        .and_then(|d| d.get_mut("endpoints"))
        .and_then(Value::as_array_mut)
    {
        for e in endpoints {
            if let Some(m) = e.get_mut("method")
                && let Some(s) = m.as_str()
            {
                *m = s.to_ascii_uppercase().into();
            }
        }
    }
    definition
}

/// Validate one definition (as sent, or with defaults applied) and compile it.
pub fn compile(
    definition: &Value,
    env: &dyn Fn(&str) -> Option<String>,
    default_timeout: Duration,
    metrics: &ProxyMetrics,
) -> Result<Api, ErrorMap> {
    let mut errors = Errors::default();
    let empty = Map::new();
    let Some(obj) = definition.as_object() else {
        errors.add("api", "api", "must be an object");
        return Err(errors.0);
    };
    let id = errors.string("api", obj, "id").to_owned();
    errors.string("api", obj, "name");
    let auth_type = errors.opt_string("api", obj, "auth_type", "none");
    if auth_type != "jwt" && auth_type != "none" {
        errors.add("api", "auth_type", r#"must be one of ["jwt", "none"]"#);
    }
    let jwt = auth_type == "jwt";

    // Auth (key: the API id).
    let auth_obj = obj.get("auth").and_then(Value::as_object).unwrap_or(&empty);
    let mut auth = Auth::default();
    if bool_field(auth_obj, "use_header") {
        let name = errors.present(&id, auth_obj, "header_name");
        if !jwt {
            errors.add(&id, "auth_type", r#"must be one of ["jwt"]"#);
        }
        if !name.is_empty() {
            match routes::auth_header(name) {
                Ok(h) => auth.header = Some(h),
                Err(reason) => errors.add(&id, "header_name", reason),
            }
        }
    }
    if bool_field(auth_obj, "use_query") {
        let name = errors.present(&id, auth_obj, "query_name");
        if !jwt {
            errors.add(&id, "auth_type", r#"must be one of ["jwt"]"#);
        }
        if !name.is_empty() {
            auth.query = Some(name.to_owned());
        }
    }

    // Proxy (the HTTP target of http endpoints).
    let http_target = match obj.get("proxy") {
        None | Some(Value::Null) => {
            errors.add("api", "proxy", PRESENT);
            None
        }
        Some(Value::Object(proxy)) => {
            if proxy.is_empty() {
                // RIG: an empty map is not "present", and its fields are checked as well.
                errors.add("api", "proxy", PRESENT);
            }
            let url = errors.string("api", proxy, "target_url");
            let port = match proxy.get("port") {
                None | Some(Value::Null) => {
                    errors.add("api", "port", "must be integer");
                    None
                }
                Some(Value::Number(n)) => match n.as_u64().and_then(|p| u16::try_from(p).ok()) {
                    Some(p) => Some(p),
                    None => {
                        errors.add("api", "port", "must be integer");
                        None
                    }
                },
                Some(_) => {
                    errors.add("api", "port", "must be integer");
                    None
                }
            };
            match (url.is_empty(), port) {
                (false, Some(port)) => {
                    let host = if bool_field(proxy, "use_env") {
                        env(url).unwrap_or_else(|| "localhost".to_owned())
                    } else {
                        url.to_owned()
                    };
                    let base = if host.contains("://") {
                        format!("{}:{port}", host.trim_end_matches('/'))
                    } else {
                        format!("http://{}:{port}", host.trim_end_matches('/'))
                    };
                    match HttpTarget::parse(&base) {
                        Ok(t) => Some(t),
                        Err(reason) => {
                            errors.add("api", "target_url", reason);
                            None
                        }
                    }
                }
                _ => None,
            }
        }
        Some(_) => {
            errors.add("api", "proxy", "must be an object");
            None
        }
    };

    // Version data: routing uses `default`.
    let default = match obj.get("version_data") {
        None | Some(Value::Null) => {
            errors.add("api", "version_data", PRESENT);
            None
        }
        Some(Value::Object(v)) if v.is_empty() => {
            errors.add("api", "version_data", PRESENT);
            errors.add(
                "api",
                "version_data",
                "must have at least one version, e.g. default",
            );
            None
        }
        Some(Value::Object(v)) => match v.get("default").and_then(Value::as_object) {
            Some(d) => Some(d),
            None => {
                errors.add("api", "version_data", "must have a version named default");
                None
            }
        },
        Some(_) => {
            errors.add("api", "version_data", "must be an object");
            None
        }
    };
    let add_headers = match default
        .and_then(|d| d.get("transform_request_headers"))
        .and_then(|t| t.get("add_headers"))
    {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(h)) => {
            let mut pairs = Vec::with_capacity(h.len());
            for (k, v) in h {
                match v.as_str() {
                    Some(s) => pairs.push((k.clone(), s.to_owned())),
                    None => errors.add("api", "add_headers", format!("{k}: {STRING}")),
                }
            }
            let refs: Vec<(&String, &String)> = pairs.iter().map(|(k, v)| (k, v)).collect();
            routes::parse_headers(refs).unwrap_or_else(|reason| {
                errors.add("api", "add_headers", reason);
                Vec::new()
            })
        }
        Some(_) => {
            errors.add("api", "add_headers", "must be an object");
            Vec::new()
        }
    };
    let mut endpoints = Vec::new();
    match default.map(|d| d.get("endpoints")) {
        None => {}
        Some(None | Some(Value::Null)) => errors.add("api", "endpoints", "must be list"),
        Some(Some(Value::Array(list))) => {
            for e in list {
                if let Some(endpoint) = endpoint(&mut errors, &id, jwt, e, metrics) {
                    endpoints.push(endpoint);
                }
            }
        }
        Some(Some(_)) => errors.add("api", "endpoints", "must be list"),
    }
    let needs_http = endpoints.iter().any(|e| e.target.is_none());
    if !errors.0.is_empty() {
        return Err(errors.0);
    }
    let target = match http_target {
        Some(t) => Target::Http(t),
        // Only reachable when the `proxy` errors were reported above.
        None if needs_http => {
            errors.add("api", "proxy", PRESENT);
            return Err(errors.0);
        }
        None => Target::Unsupported {
            kind: "none".into(),
        },
    };
    // RIG's router skips `versioned: true` APIs: kept (listed, updatable), never routed.
    if bool_field(obj, "versioned") {
        endpoints.clear();
    }
    Ok(Api {
        shared: ApiShared {
            id,
            target,
            response_from: ResponseFrom::Http,
            timeout: default_timeout,
            auth,
            add_headers,
        },
        endpoints,
        origin: Origin::Rig,
        definition: definition.clone(),
    })
}

fn endpoint(
    errors: &mut Errors,
    api_id: &str,
    jwt: bool,
    value: &Value,
    metrics: &ProxyMetrics,
) -> Option<Endpoint> {
    let Some(e) = value.as_object() else {
        errors.add(&format!("{api_id}/"), "endpoint", "must be an object");
        return None;
    };
    let raw_id = e.get("id").and_then(Value::as_str).unwrap_or_default();
    let key = format!("{api_id}/{raw_id}");
    let before = errors.0.len();
    // RIG's order: id, path_regex, method.
    let id = errors.string(&key, e, "id").to_owned();
    let path_regex = errors.string(&key, e, "path_regex").to_owned();
    let method = errors.string(&key, e, "method");
    let method = if method.is_empty() {
        None
    } else {
        match Method::from_bytes(method.as_bytes()) {
            Ok(m) => Some(m),
            Err(_) => {
                errors.add(&key, "method", "must be an HTTP method");
                None
            }
        }
    };
    let regex = if path_regex.is_empty() {
        None
    } else {
        match routes::compile_regex(&path_regex) {
            Ok(r) => Some(r),
            Err(reason) => {
                errors.add(
                    &key,
                    "path_regex",
                    format!("must be a valid regex: {reason}"),
                );
                None
            }
        }
    };
    let replacement = match e.get("path_replacement") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.add(&key, "path_replacement", STRING);
            None
        }
    };
    let secured = bool_field(e, "secured");
    if secured && !jwt {
        errors.add(&key, "auth_type", r#"must be one of ["jwt"]"#);
    }
    let target_kind = errors.opt_string(&key, e, "target", "http");
    let topic = e.get("topic").and_then(Value::as_str).unwrap_or_default();
    let target = match target_kind {
        "http" => None,
        "kafka" | "kinesis" if topic.is_empty() => {
            errors.add(&key, "topic", PRESENT);
            None
        }
        "kafka" => Some(Target::Kafka {
            topic: topic.to_owned(),
            wrap_plain_json: false,
            wrap_event_type: None,
        }),
        "kinesis" | "nats" => Some(Target::Unsupported {
            kind: target_kind.to_owned(),
        }),
        _ => {
            errors.add(
                &key,
                "target",
                r#"must be one of ["http", "kafka", "kinesis", "nats"]"#,
            );
            None
        }
    };
    if e.get("schema").is_some_and(|s| !s.is_null()) && e.get("target").is_none() {
        errors.add(&key, "target", PRESENT);
    }
    let response_from = match errors.opt_string(&key, e, "response_from", "http") {
        "http" => ResponseFrom::Http,
        "http_async" => ResponseFrom::HttpAsync,
        "kafka" => ResponseFrom::Kafka,
        "kinesis" | "nats" => ResponseFrom::Unsupported,
        _ => {
            errors.add(
                &key,
                "response_from",
                r#"must be one of ["http", "kafka", "http_async", "kinesis", "nats"]"#,
            );
            ResponseFrom::Http
        }
    };
    if errors.0.len() != before {
        return None;
    }
    let (method, regex) = (method?, regex?);
    let target_label = target.as_ref().map_or("http", Target::label).to_owned();
    Some(Endpoint {
        counters: metrics.endpoint(&method, &path_regex, &target_label, response_from.label()),
        id,
        method,
        path_regex,
        regex,
        replacement,
        secured: secured && jwt,
        add_headers: bool_field(e, "transform_request_headers"),
        target,
        response_from: Some(response_from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_one(v: Value) -> Result<Api, ErrorMap> {
        let metrics = ProxyMetrics::default();
        compile(
            &with_defaults(v),
            &|k| (k == "BOOKS_HOST").then(|| "books".to_owned()),
            Duration::from_secs(5),
            &metrics,
        )
    }

    fn valid() -> Value {
        json!({
            "id": "books", "name": "books", "auth_type": "jwt",
            "version_data": {"default": {"endpoints": [
                {"id": "e1", "method": "get", "path_regex": "/books/(.+)", "path_replacement": "/v2/\\1", "secured": true}
            ]}},
            "proxy": {"use_env": true, "target_url": "BOOKS_HOST", "port": 3000}
        })
    }

    #[test]
    fn use_env_names_a_variable_and_an_unset_one_means_localhost() {
        let metrics = ProxyMetrics::default();
        let mut def = valid();
        def["proxy"] = json!({"use_env": true, "target_url": "BOOKS_HOST", "port": 3000});
        let def = with_defaults(def);
        let env = |k: &str| (k == "BOOKS_HOST").then(|| "https://books.internal".to_owned());
        let api = compile(&def, &env, Duration::from_secs(5), &metrics).expect("valid");
        let Target::Http(t) = &api.shared.target else {
            panic!("http target")
        };
        assert_eq!(
            (t.scheme.as_str(), t.authority.as_str()),
            ("https", "books.internal:3000")
        );
        let api = compile(&def, &|_| None, Duration::from_secs(5), &metrics).expect("valid");
        let Target::Http(t) = &api.shared.target else {
            panic!("http target")
        };
        assert_eq!(
            (t.scheme.as_str(), t.authority.as_str()),
            ("http", "localhost:3000")
        );
    }

    #[test]
    fn a_valid_definition_gets_rigs_defaults() {
        let api = compile_one(valid()).expect("valid");
        let Target::Http(t) = &api.shared.target else {
            panic!("http target")
        };
        assert_eq!(t.authority.as_str(), "books:3000");
        assert_eq!(api.endpoints[0].method, Method::GET);
        assert!(api.endpoints[0].secured);
        assert_eq!(
            api.shared.auth.header.as_ref().map(|h| h.as_str()),
            Some("authorization")
        );
        assert_eq!(api.definition["active"], true);
        assert_eq!(api.definition["auth"]["header_name"], "Authorization");
    }

    #[test]
    fn errors_use_rigs_keys_and_messages() {
        let errors = compile_one(json!({
            "id": "books", "name": 3,
            "version_data": {"default": {"endpoints": [
                {"id": "e1", "method": "GET", "secured": true},
                {"id": "e2", "method": "POST", "path_regex": "/x", "target": "kafka"}
            ]}},
            "proxy": {"target_url": "h", "port": "80"}
        }))
        .expect_err("invalid");
        assert_eq!(
            errors["api"],
            json!([{"name": STRING}, {"name": NON_EMPTY}, {"port": "must be integer"}])
        );
        assert_eq!(
            errors["books/e1"],
            json!([{"path_regex": STRING}, {"path_regex": NON_EMPTY}, {"auth_type": "must be one of [\"jwt\"]"}])
        );
        assert_eq!(errors["books/e2"], json!([{"topic": PRESENT}]));
        let errors = compile_one(json!({"id": "", "version_data": {}})).expect_err("invalid");
        assert_eq!(
            errors["api"],
            json!([
                {"id": NON_EMPTY}, {"name": STRING}, {"name": NON_EMPTY}, {"proxy": PRESENT},
                {"version_data": PRESENT},
                {"version_data": "must have at least one version, e.g. default"}
            ])
        );
    }

    #[test]
    fn a_definition_is_validated_as_sent_with_every_problem_at_once() {
        let metrics = ProxyMetrics::default();
        let sent = json!({
            "id": "invalid-config", "name": "n", "auth_type": "jwt",
            "auth": {"use_header": true},
            "version_data": {"default": {"endpoints": [
                {"id": "e1", "method": "get", "path_regex": "/x"}
            ]}},
            "proxy": {}
        });
        let compile = |v: Value| compile(&v, &|_| None, Duration::from_secs(5), &metrics);
        let errors = compile(as_sent(sent.clone())).expect_err("as sent");
        assert_eq!(errors["invalid-config"], json!([{"header_name": PRESENT}]));
        assert_eq!(
            errors["api"],
            json!([
                {"proxy": PRESENT}, {"target_url": STRING}, {"target_url": NON_EMPTY},
                {"port": "must be integer"}
            ])
        );
        // The defaults would have hidden the missing header name.
        let mut fixed = sent;
        fixed["proxy"] = json!({"target_url": "h", "port": 80});
        assert!(compile(with_defaults(fixed.clone())).is_ok());
        assert!(compile(as_sent(fixed.clone())).is_err());
        fixed["auth"]["header_name"] = "Authorization".into();
        let api = compile(as_sent(fixed)).expect("valid as sent");
        assert_eq!(
            api.endpoints[0].method,
            Method::GET,
            "methods are read upper-cased"
        );
    }

    /// The error maps of RIG's own `/v3/apis` tests, body for body.
    #[test]
    fn error_maps_match_rigs_tests() {
        const ID: &str = "invalid-config";
        let metrics = ProxyMetrics::default();
        let errors = |v: Value| {
            compile(&as_sent(v), &|_| None, Duration::from_secs(5), &metrics)
                .map(|_| ())
                .expect_err("invalid")
        };
        let cfg = |endpoints: Value, auth: Value, auth_type: Value| {
            json!({"active": true, "id": ID, "name": ID,
                "proxy": {"port": 3000, "target_url": "http://localhost", "use_env": false},
                "version_data": {"default": {"endpoints": endpoints}}, "versioned": false,
                "auth": auth, "auth_type": auth_type})
        };
        let one = |extra: Value| {
            let mut e = json!({"id": "invalid-config1", "method": "GET", "path_regex": "/foo"});
            for (k, v) in extra.as_object().expect("object") {
                e[k] = v.clone();
            }
            json!([e])
        };
        let proxy = json!({"port": 3000, "target_url": "http://localhost"});
        let cases = [
            (
                json!({"id": ID}),
                json!({"api": [{"name": STRING}, {"name": NON_EMPTY}, {"proxy": PRESENT}, {"version_data": PRESENT}]}),
            ),
            (
                json!({"id": "p", "name": "p", "proxy": {}, "version_data": {"default": {"endpoints": []}}}),
                json!({"api": [{"proxy": PRESENT}, {"target_url": STRING}, {"target_url": NON_EMPTY}, {"port": "must be integer"}]}),
            ),
            (
                json!({"id": "p", "name": "p", "proxy": proxy, "version_data": {}}),
                json!({"api": [{"version_data": PRESENT}, {"version_data": "must have at least one version, e.g. default"}]}),
            ),
            (
                json!({"id": "p", "name": "p", "proxy": proxy, "version_data": {"default": {}}}),
                json!({"api": [{"endpoints": "must be list"}]}),
            ),
            (
                json!({"id": "p", "name": "p", "proxy": proxy, "version_data": {"default": {"endpoints": {}}}}),
                json!({"api": [{"endpoints": "must be list"}]}),
            ),
            (
                cfg(json!([{}]), json!({}), Value::Null),
                json!({"invalid-config/": [{"id": STRING}, {"id": NON_EMPTY}, {"path_regex": STRING}, {"path_regex": NON_EMPTY}, {"method": STRING}, {"method": NON_EMPTY}]}),
            ),
            (
                cfg(one(json!({"path_regex": ""})), json!({}), Value::Null),
                json!({"invalid-config/invalid-config1": [{"path_regex": NON_EMPTY}]}),
            ),
            (
                cfg(one(json!({"target": "kinesis"})), json!({}), Value::Null),
                json!({"invalid-config/invalid-config1": [{"topic": PRESENT}]}),
            ),
            (
                cfg(one(json!({"target": "kafka"})), json!({}), Value::Null),
                json!({"invalid-config/invalid-config1": [{"topic": PRESENT}]}),
            ),
            (
                cfg(
                    one(json!({"schema": "some-avro-schema"})),
                    json!({}),
                    Value::Null,
                ),
                json!({"invalid-config/invalid-config1": [{"target": PRESENT}]}),
            ),
            (
                cfg(one(json!({"secured": true})), json!({}), Value::Null),
                json!({"invalid-config/invalid-config1": [{"auth_type": "must be one of [\"jwt\"]"}]}),
            ),
            (
                cfg(one(json!({})), json!({"use_header": true}), "jwt".into()),
                json!({ID: [{"header_name": PRESENT}]}),
            ),
            (
                cfg(one(json!({})), json!({"use_query": true}), "jwt".into()),
                json!({ID: [{"query_name": PRESENT}]}),
            ),
            (
                cfg(
                    one(json!({})),
                    json!({"use_query": true, "query_name": "test"}),
                    Value::Null,
                ),
                json!({ID: [{"auth_type": "must be one of [\"jwt\"]"}]}),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(Value::Object(errors(body.clone())), expected, "{body}");
        }
    }

    #[test]
    fn a_config_file_must_be_a_list_of_unique_valid_definitions() {
        let metrics = ProxyMetrics::default();
        let parse = |text: &str| parse_list(text, &|_| None, Duration::from_secs(5), &metrics);
        assert!(parse("{}").is_err());
        assert!(parse("[").is_err());
        let one = valid().to_string();
        assert_eq!(parse(&format!("[{one}]")).expect("valid").len(), 1);
        let err = parse(&format!("[{one},{one}]")).expect_err("duplicate");
        assert!(err["api"].to_string().contains("unique"), "{err:?}");
    }
}
