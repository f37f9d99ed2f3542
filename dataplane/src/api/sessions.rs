//! The RIG API of the session blacklist, on the internal port (rig-behaviour §1.2):
//!
//! - `POST /v3/session-blacklist` with `{"sessionId": "<id>", "validityInSeconds": <n>}` (JSON, or
//!   the same two fields URL-encoded) revokes the session for `n` seconds and closes its live
//!   connections in this process at once. `201`, body `{}` (`application/json; charset=utf-8`),
//!   `location: /v3/session-blacklist/<id>` (the id percent-encoded; RIG wrote it raw) and
//!   `access-control-allow-origin: *`. Revoking a revoked session keeps the later deadline.
//! - Invalid input → `400`, `text/plain`, RIG's messages, the first problem only, `sessionId`
//!   first: `Missing value for "sessionId"`, `Expected non-empty string, got <value>`,
//!   `Missing value for "validityInSeconds"`, `Expected a number, got <value>` (a string that is
//!   not an integer), `Expected a positive number, got <value>`. `<value>` is the JSON text of
//!   what was sent (RIG printed Elixir terms, e.g. `nil` where this prints `null`). A numeric
//!   string must be an integer (RIG's `Integer.parse`); a JSON number may have a fraction.
//!   Validities beyond [`MAX_VALIDITY`] are capped to it.
//! - Bodies: `application/json` (or `application/*+json`), `application/x-www-form-urlencoded`;
//!   no `content-type` means no fields (RIG); anything else → `415`. A body that is not valid
//!   JSON → `400`, a JSON body that is not an object has no fields.
//! - `GET /v3/session-blacklist/<id>` (percent-decoded): `200 {}` while the session is revoked,
//!   else `404` `Not found.`
//! - `OPTIONS /v3/session-blacklist`: RIG's preflight answer (`204`, allow-origin `*`,
//!   allow-methods `POST`, allow-headers `content-type`).
//!
//! `/v2/session-blacklist` behaves the same (RIG: v2 is v3); `location` keeps the request's
//! prefix.
//!
//! Cluster mode: a valid `POST` also stores the revocation as a `Blacklist` object in
//! `POD_NAMESPACE` (one per session, so a repeated request updates it), which every pod applies
//! and which survives restarts ([`crate::cluster::blacklists::revoke_via_object`]); the answer is
//! the same `201`. When the apiserver cannot be written the session is still revoked on this pod
//! (until its validity ends) and the answer is `503` (`text/plain`) asking to retry.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Response, StatusCode, header};
use hyper::Request;
use hyper::body::Incoming;
use serde_json::{Map, Value};

use super::state::State;
use crate::http::{Body, full, read_body, text};

/// The collection paths served.
const COLLECTIONS: [&str; 2] = ["/v3/session-blacklist", "/v2/session-blacklist"];

pub use crate::sessions::MAX_VALIDITY;

/// A valid revocation request.
#[derive(Debug, Clone, PartialEq)]
pub struct Revocation {
    /// The session to revoke.
    pub session: String,
    /// For how long.
    pub validity: Duration,
}

/// A refused request: its status and text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// 400 or 415.
    pub status: StatusCode,
    /// The answer's text.
    pub message: String,
}

impl Invalid {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

/// Whether `path` is a collection path (`POST`, `OPTIONS`).
pub fn is_collection(path: &str) -> bool {
    COLLECTIONS.contains(&path)
}

/// The (still percent-encoded) session id of an entry path `/v3/session-blacklist/<id>`.
pub fn id_in_path(path: &str) -> Option<&str> {
    COLLECTIONS.iter().find_map(|c| {
        path.strip_prefix(c)?
            .strip_prefix('/')
            .filter(|id| !id.is_empty() && !id.contains('/'))
    })
}

/// Route a request on a blacklist path; `None` when `method` and `path` are not one of ours.
pub async fn handle(state: &Arc<State>, req: Request<Incoming>) -> Option<Response<Body>> {
    let path = req.uri().path().to_owned();
    match *req.method() {
        Method::POST if is_collection(&path) => Some(post(state, req, &path).await),
        Method::OPTIONS if is_collection(&path) => Some(preflight()),
        Method::GET => id_in_path(&path).map(|id| get(state, id)),
        _ => None,
    }
}

async fn post(state: &Arc<State>, req: Request<Incoming>, path: &str) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let mut res = match read_body(
        body,
        state.config.max_body_bytes,
        state.config.body_idle_timeout,
    )
    .await
    {
        Err(res) => res,
        Ok(body) => {
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            match parse(content_type, &body) {
                Err(invalid) => {
                    tracing::info!(reason = %invalid.message, "session blacklist request refused");
                    text(invalid.status, invalid.message)
                }
                Ok(revocation) => match state.kube.get() {
                    Some(kube) => {
                        let stored = crate::cluster::blacklists::revoke_via_object(
                            &state.revocations,
                            &state.metrics,
                            kube,
                            &revocation.session,
                            revocation.validity,
                        )
                        .await;
                        match stored {
                            Ok(()) => created(path, &revocation.session),
                            Err(error) => text(
                                StatusCode::SERVICE_UNAVAILABLE,
                                format!(
                                    "The session is revoked on this instance only: storing the \
                                     Blacklist object failed ({error}). Retry the request."
                                ),
                            ),
                        }
                    }
                    None => {
                        let until = tokio::time::Instant::now() + revocation.validity;
                        state.revoke(&revocation.session, until, crate::auth::Source::Api);
                        created(path, &revocation.session)
                    }
                },
            }
        }
    };
    res.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    res
}

fn created(path: &str, session: &str) -> Response<Body> {
    let mut res = Response::new(full("{}"));
    *res.status_mut() = StatusCode::CREATED;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    // Percent-encoding leaves only ASCII, so the value is always valid.
    if let Ok(location) = HeaderValue::from_str(&format!("{path}/{}", percent_encode(session))) {
        h.insert(header::LOCATION, location);
    }
    res
}

fn get(state: &State, raw_id: &str) -> Response<Body> {
    let revoked = percent_decode(raw_id).is_some_and(|id| state.blacklist.is_revoked(&id));
    if revoked {
        let mut res = Response::new(full("{}"));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        res
    } else {
        text(StatusCode::NOT_FOUND, "Not found.")
    }
}

fn preflight() -> Response<Body> {
    let mut res = Response::new(full(""));
    *res.status_mut() = StatusCode::NO_CONTENT;
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    res
}

/// Read and validate a revocation request body (module docs).
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Revocation, Invalid> {
    let fields = fields(content_type, body)?;
    let session = match fields.get("sessionId") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => {
            return Err(Invalid::bad_request(format!(
                "Expected non-empty string, got {other}"
            )));
        }
        None => return Err(Invalid::bad_request("Missing value for \"sessionId\"")),
    };
    let (secs, shown) = match fields.get("validityInSeconds") {
        None => {
            return Err(Invalid::bad_request(
                "Missing value for \"validityInSeconds\"",
            ));
        }
        Some(Value::Number(n)) => (n.as_f64().unwrap_or(0.0), n.to_string()),
        Some(Value::String(s)) if !s.is_empty() => match integer(s) {
            // RIG reports the parsed integer, so "+0" is shown as 0.
            Some(n) => (n, s.trim_start_matches('+').to_owned()),
            None => {
                return Err(Invalid::bad_request(format!(
                    "Expected a number, got {}",
                    Value::from(s.as_str())
                )));
            }
        },
        Some(other) => {
            return Err(Invalid::bad_request(format!(
                "Expected a positive number, got {other}"
            )));
        }
    };
    if secs <= 0.0 {
        return Err(Invalid::bad_request(format!(
            "Expected a positive number, got {shown}"
        )));
    }
    let validity = Duration::try_from_secs_f64(secs)
        .unwrap_or(MAX_VALIDITY)
        .min(MAX_VALIDITY);
    Ok(Revocation { session, validity })
}

/// The request's fields by content type.
fn fields(content_type: Option<&str>, body: &[u8]) -> Result<Map<String, Value>, Invalid> {
    let Some(content_type) = content_type else {
        return Ok(Map::new());
    };
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media == "application/json"
        || (media.starts_with("application/") && media.ends_with("+json"))
    {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        return match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Ok(Map::new()),
            Err(error) => Err(Invalid::bad_request(format!(
                "Could not parse the request body as JSON: {error}"
            ))),
        };
    }
    if media == "application/x-www-form-urlencoded" {
        let mut map = Map::new();
        for (key, value) in form_urlencoded::parse(body) {
            // The last occurrence wins, as in Plug.
            map.insert(key.into_owned(), Value::String(value.into_owned()));
        }
        return Ok(map);
    }
    Err(Invalid {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        message: format!(
            "Unsupported content-type {content_type:?}: send application/json or \
             application/x-www-form-urlencoded."
        ),
    })
}

/// An optionally signed decimal integer, as a number (RIG's `Integer.parse` with nothing left).
fn integer(s: &str) -> Option<f64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<f64>().ok()
}

/// Percent-encode everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decode `%XX` escapes of a path segment (`+` stays `+`); `None` when malformed or not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json");

    fn refused(content_type: Option<&str>, body: &str) -> String {
        parse(content_type, body.as_bytes())
            .expect_err(body)
            .message
    }

    #[test]
    fn valid_requests_in_json_and_form_encoding() {
        let r = parse(JSON, br#"{"sessionId":"abc","validityInSeconds":60}"#).expect("valid");
        assert_eq!(
            r,
            Revocation {
                session: "abc".into(),
                validity: Duration::from_secs(60)
            }
        );
        let r = parse(JSON, br#"{"sessionId":"abc","validityInSeconds":"+123"}"#).expect("valid");
        assert_eq!(r.validity, Duration::from_secs(123));
        let r = parse(JSON, br#"{"sessionId":"a","validityInSeconds":0.25}"#).expect("valid");
        assert_eq!(r.validity, Duration::from_millis(250));
        let r = parse(
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            b"sessionId=a+b%2Fc&validityInSeconds=5",
        )
        .expect("valid");
        assert_eq!(r.session, "a b/c");
        assert_eq!(r.validity, Duration::from_secs(5));
        let r = parse(JSON, br#"{"sessionId":"a","validityInSeconds":1e300}"#).expect("valid");
        assert_eq!(r.validity, MAX_VALIDITY, "capped");
    }

    #[test]
    fn rigs_validation_messages_session_id_first() {
        assert_eq!(refused(JSON, "{}"), "Missing value for \"sessionId\"");
        assert_eq!(
            refused(None, "sessionId=a"),
            "Missing value for \"sessionId\""
        );
        assert_eq!(refused(JSON, "[1]"), "Missing value for \"sessionId\"");
        assert_eq!(
            refused(JSON, r#"{"sessionId":"","validityInSeconds":"x"}"#),
            "Expected non-empty string, got \"\""
        );
        assert_eq!(
            refused(JSON, r#"{"sessionId":42}"#),
            "Expected non-empty string, got 42"
        );
        assert_eq!(
            refused(JSON, r#"{"sessionId":"a"}"#),
            "Missing value for \"validityInSeconds\""
        );
        assert_eq!(
            refused(JSON, r#"{"sessionId":"a","validityInSeconds":"1.5"}"#),
            "Expected a number, got \"1.5\""
        );
        assert_eq!(
            refused(JSON, r#"{"sessionId":"a","validityInSeconds":"soon"}"#),
            "Expected a number, got \"soon\""
        );
        assert_eq!(
            refused(JSON, r#"{"sessionId":"a","validityInSeconds":0}"#),
            "Expected a positive number, got 0"
        );
        assert_eq!(
            refused(JSON, r#"{"sessionId":"a","validityInSeconds":-2.5}"#),
            "Expected a positive number, got -2.5"
        );
        assert_eq!(
            refused(JSON, r#"{"sessionId":"a","validityInSeconds":"-5"}"#),
            "Expected a positive number, got -5"
        );
        assert_eq!(
            refused(JSON, r#"{"sessionId":"a","validityInSeconds":""}"#),
            "Expected a positive number, got \"\""
        );
        assert_eq!(
            refused(JSON, r#"{"sessionId":"a","validityInSeconds":null}"#),
            "Expected a positive number, got null"
        );
    }

    #[test]
    fn bodies_that_cannot_be_read() {
        let err = parse(JSON, b"{nope").expect_err("not JSON");
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(
            err.message
                .starts_with("Could not parse the request body as JSON")
        );
        let err = parse(Some("text/plain"), b"sessionId=a").expect_err("unsupported");
        assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(
            parse(
                Some("application/merge-patch+json"),
                br#"{"sessionId":"a","validityInSeconds":1}"#
            )
            .is_ok()
        );
    }

    #[test]
    fn paths_and_percent_coding() {
        assert!(is_collection("/v3/session-blacklist"));
        assert!(is_collection("/v2/session-blacklist"));
        assert!(!is_collection("/v3/session-blacklist/"));
        assert_eq!(id_in_path("/v3/session-blacklist/a%20b"), Some("a%20b"));
        assert_eq!(id_in_path("/v2/session-blacklist/x"), Some("x"));
        assert_eq!(id_in_path("/v3/session-blacklist/"), None);
        assert_eq!(id_in_path("/v3/session-blacklist/a/b"), None);
        assert_eq!(id_in_path("/v3/session-blacklistx"), None);
        let odd = "a b/c?d%e+f€";
        let encoded = percent_encode(odd);
        assert_eq!(encoded, "a%20b%2Fc%3Fd%25e%2Bf%E2%82%AC");
        assert_eq!(percent_decode(&encoded).as_deref(), Some(odd));
        assert_eq!(percent_decode("a+b").as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%FF"), None, "not UTF-8");
    }
}
