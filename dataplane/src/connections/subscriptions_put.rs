//! `PUT /_rig/v1/connection/{sse,ws,longpolling}/<token>/subscriptions`: replace the subscriptions
//! of an open connection (rig-behaviour §1.1). The transport in the path does not matter.
//!
//! When the token names another process, the request is forwarded to it ([`crate::peers`]) before
//! any check, and the owner's answer is relayed: the owner runs every check itself, in RIG's order,
//! so the client sees the same answers wherever the Service sent it, and the external check is
//! called once. Requests arriving from a peer ([`Via::Peer`], the internal API) are never forwarded
//! again.
//!
//! Checks, in RIG's order (beyond RIG: a missing content type and a `subscriptions` value that is
//! not a list are 400, where RIG answered 500):
//! 1. `accept` must allow JSON (absent = `*/*`), else 406;
//! 2. `content-type` must be `application/json`, else 400;
//! 3. the body must be a JSON object with a `subscriptions` list, else 400;
//! 4. the subscription checks (`SUBSCRIPTION_CHECK`, and per event type its `EventRoute`'s
//!    `subscriptionCheck`, for given and JWT-derived subscriptions), else 403
//!    `Subscription denied.`;
//! 5. the token must be valid, else 400 `Invalid connection token.`;
//! 6. the connection must be open here, else 410 `Connection no longer exists.`;
//! 7. every `Bearer` JWT in `Authorization` must verify (a revoked session's token does not),
//!    else 400;
//! 8. every subscription must be valid, else 400;
//! 9. 204: the set becomes the JWT-derived subscriptions of every bearer token, then the body's,
//!    without repeats; it replaces the old set, and the connection gets `rig.subscriptions_set`.
//!    The connection joins the sessions of the bearer tokens (in addition to those it joined
//!    before, as RIG's process groups did), so revoking any of them closes it. With
//!    `RIG_CLOSE_AT_TOKEN_EXPIRY`, a bearer token that expires later than the connection's current
//!    deadline extends it (a token refresh keeps the connection; [`crate::connections::expiry`]).
//!
//! Every answer carries `access-control-allow-origin` (as RIG's controller did), so browsers can
//! read it.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::Value;

use super::context::Connections;
use crate::auth::check::{self, ExternalRequest};
use crate::http::{Body, read_body, text};
use crate::subscriptions::{self, Subscription};

const PREFIX: &str = "/_rig/v1/connection/";
const SUFFIX: &str = "/subscriptions";
const TRANSPORTS: [&str; 3] = ["sse", "ws", "longpolling"];
const INTERNAL_PREFIX: &str = "/v3/connections/";

/// Where a subscription update came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A client, on the inbound port: forwarded when another process owns the connection.
    Inbound,
    /// A peer that forwarded it (internal API): handled here, never forwarded again.
    Peer,
}

/// The token in an inbound path `/_rig/v1/connection/{sse,ws,longpolling}/<token>/subscriptions`.
pub fn token_in_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (transport, token) = rest.split_once('/')?;
    (TRANSPORTS.contains(&transport) && !token.is_empty() && !token.contains('/')).then_some(token)
}

/// The token in an internal path `/v3/connections/<token>/subscriptions`.
pub fn token_in_internal_path(path: &str) -> Option<&str> {
    let token = path.strip_prefix(INTERNAL_PREFIX)?.strip_suffix(SUFFIX)?;
    (!token.is_empty() && !token.contains('/')).then_some(token)
}

/// Handle a subscription update for the connection named by `token`.
pub async fn put(
    conns: &Arc<Connections>,
    req: Request<Incoming>,
    token: String,
    via: Via,
) -> Response<Body> {
    let mut res = answer(conns, req, &token, via).await;
    res.headers_mut()
        .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, conns.cors.clone());
    res
}

async fn answer(
    conns: &Arc<Connections>,
    req: Request<Incoming>,
    token: &str,
    via: Via,
) -> Response<Body> {
    let decoded = conns.fanout.tokens().decode(token);
    let (parts, body) = req.into_parts();
    if via == Via::Inbound
        && let Ok(owner) = decoded.as_ref().map(|t| &t.owner)
        && *owner != conns.fanout.owner()
        && conns.peers.knows(owner)
    {
        let body = match read_body(
            body,
            conns.settings.max_body_bytes,
            conns.settings.body_idle_timeout,
        )
        .await
        {
            Ok(body) => body,
            Err(res) => return res,
        };
        return match conns
            .peers
            .forward_subscriptions(owner, token, &parts, body)
            .await
        {
            Ok(res) => res,
            Err(error) => text(error.status(), error.to_string()),
        };
    }
    let headers = &parts.headers;

    // 1-3: the request's form.
    if !accepts_json(headers) {
        return text(
            StatusCode::NOT_ACCEPTABLE,
            "No supported media type in the accept header: expected one of application/json.",
        );
    }
    if !is_json(headers) {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "Expected JSON encoded body.\n\nTechnical info:\ncontent-type is {}, not \
                 application/json\n",
                headers
                    .get(header::CONTENT_TYPE)
                    .map_or("missing".to_owned(), |v| format!("{v:?}"))
            ),
        );
    }
    let raw = match read_body(
        body,
        conns.settings.max_body_bytes,
        conns.settings.body_idle_timeout,
    )
    .await
    {
        Ok(body) => body,
        Err(res) => return res,
    };
    let given = match subscriptions_field(&raw) {
        Ok(given) => given,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };

    // 4: the subscription checks, per event type (`auth::access`): an `EventRoute`'s check for
    // its types (given, or derived from a bearer token that verifies), SUBSCRIPTION_CHECK for the
    // rest, always (RIG). A list that does not parse is judged whole by SUBSCRIPTION_CHECK here
    // and refused at step 8. The process-wide check service gets the body and the authorization
    // as received; a route's gets the subscriptions it decides on.
    let parsed = subscriptions::parse_value(&given).ok();
    // Each bearer token is verified once (a refusal is counted once); step 7 reuses the result.
    let verified: Vec<_> = crate::auth::bearer_tokens(headers)
        .into_iter()
        .map(|token| conns.verify_jwt(token))
        .collect();
    let derived: Vec<Subscription> = verified
        .iter()
        .filter_map(|claims| claims.as_ref().ok())
        .flat_map(|claims| {
            conns
                .fanout
                .hub()
                .extractors()
                .jwt_subscriptions(claims.as_value())
        })
        .collect();
    let plan = match &parsed {
        Some(parsed) => conns.access.subscription_plan(Some(parsed), &derived, true),
        None => conns.access.subscription_plan(Some(&[]), &[], true),
    };
    for planned in plan {
        let body = if planned.whole_request {
            raw.clone()
        } else {
            serde_json::json!({ "subscriptions": subscriptions::to_json(&planned.subscriptions) })
                .to_string()
                .into()
        };
        let allowed = planned
            .check
            .authorize_unrevoked(
                || crate::auth::access::presents_revoked(&conns.jwt, &check::check_tokens(headers)),
                || {
                    check::check_tokens(headers)
                        .into_iter()
                        .any(|t| conns.verify_jwt(t).is_ok())
                },
                || ExternalRequest {
                    body,
                    content_type: headers
                        .get(header::CONTENT_TYPE)
                        .cloned()
                        .unwrap_or(HeaderValue::from_static("application/json")),
                    authorization: check::authorization_headers(headers),
                },
            )
            .await;
        if allowed.is_err() {
            return text(StatusCode::FORBIDDEN, "Subscription denied.");
        }
    }

    // 5-6: the connection.
    let conn = match decoded {
        Ok(conn) => conn,
        Err(error) => {
            tracing::info!(%error, "subscription update with an invalid connection token");
            return text(StatusCode::BAD_REQUEST, "Invalid connection token.");
        }
    };
    if conn.owner != conns.fanout.owner() {
        let message = match via {
            // A peer sent it here although the token names another process: the peers are
            // misconfigured. Forwarding again could loop, so stop here.
            Via::Peer => {
                tracing::warn!(owner = %conn.owner, here = %conns.fanout.owner(), "a peer forwarded a subscription update for a connection this process does not own; check RIG_PEERS");
                format!(
                    "Connection no longer exists: it belongs to process {:?}, not to {:?}.",
                    conn.owner,
                    conns.fanout.owner()
                )
            }
            Via::Inbound => conns.peers.unknown_owner(&conn.owner).to_string(),
        };
        return text(StatusCode::GONE, message);
    }
    if !conns.fanout.hub().contains(conn.conn) {
        return text(StatusCode::GONE, "Connection no longer exists.");
    }

    // 7-8: the new set.
    let mut set = Vec::new();
    let mut sessions = Vec::new();
    let mut exp: Option<u64> = None;
    for claims in verified {
        match claims {
            Ok(claims) => {
                set.extend(
                    conns
                        .fanout
                        .hub()
                        .extractors()
                        .jwt_subscriptions(claims.as_value()),
                );
                sessions.extend(conns.session_of(&claims));
                exp = exp.max(claims.exp());
            }
            Err(error) => {
                tracing::info!(reason = %error.reason(), "subscription update with an invalid JWT");
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "cannot accept subscription request: invalid authorization header: {error}"
                    ),
                );
            }
        }
    }
    match subscriptions::parse_value(&given) {
        Ok(passed) => set.extend(passed),
        Err(error) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "cannot accept subscription request: could not parse given subscriptions: \
                     {error}"
                ),
            );
        }
    }
    let set: Vec<Subscription> = subscriptions::dedup(set);

    // 9.
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| crate::proxy::http::valid_traceparent(v));
    if !conns.fanout.set_subscriptions(conn.conn, &set, traceparent) {
        return text(StatusCode::GONE, "Connection no longer exists.");
    }
    // No limit here: the connection exists already, a subscription update only adds sessions.
    if !sessions.is_empty() && conns.fanout.join_sessions(conn.conn, &sessions, None) != Ok(true) {
        return text(StatusCode::GONE, "Connection no longer exists.");
    }
    if !conns.fanout.expire_with_token(conn.conn, exp) {
        return text(StatusCode::GONE, "Connection no longer exists.");
    }
    let mut res = Response::new(crate::http::full(Bytes::new()));
    *res.status_mut() = StatusCode::NO_CONTENT;
    res
}

/// The body's `subscriptions` value, which must be a list; otherwise the answer's text (RIG's, or
/// ours for a value that is not a list, where RIG crashed).
fn subscriptions_field(raw: &[u8]) -> Result<Value, String> {
    let json: Value = serde_json::from_slice(raw)
        .map_err(|error| format!("Expected JSON encoded body.\n\nTechnical info:\n{error}\n"))?;
    let Value::Object(mut object) = json else {
        return Err(not_present(&json));
    };
    match object.remove("subscriptions") {
        Some(list @ Value::Array(_)) => Ok(list),
        Some(other) => Err(format!(
            "Expected field \"subscriptions\" to be a list of subscriptions, got {}.\n",
            kind(&other)
        )),
        None => Err(not_present(&Value::Object(object))),
    }
}

/// RIG's answer to a body without `subscriptions`, echoing the body (shortened).
fn not_present(json: &Value) -> String {
    const MAX: usize = 1024;
    let mut body = json.to_string();
    if body.len() > MAX {
        let mut end = MAX;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body.truncate(end);
        body.push_str("...");
    }
    format!("Expected field \"subscriptions\" is not present.\n\nDecoded request body:\n{body}\n")
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Whether `accept` allows a JSON answer: absent, or some media range `application/json`,
/// `application/*` or `*/*` with a non-zero quality.
fn accepts_json(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::ACCEPT).iter().peekable();
    if values.peek().is_none() {
        return true;
    }
    values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut params = range.split(';');
            let media = params.next().unwrap_or_default().trim();
            let refused = params.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            !refused
                && ["application/json", "application/*", "*/*"]
                    .iter()
                    .any(|m| media.eq_ignore_ascii_case(m))
        })
}

/// Whether `content-type` is `application/json` (parameters such as `charset` allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn tokens_are_found_in_all_three_prefixes_and_the_internal_path() {
        for transport in ["sse", "ws", "longpolling"] {
            let path = format!("/_rig/v1/connection/{transport}/abc-_1/subscriptions");
            assert_eq!(token_in_path(&path), Some("abc-_1"));
        }
        assert_eq!(
            token_in_path("/_rig/v1/connection/mqtt/abc/subscriptions"),
            None
        );
        assert_eq!(
            token_in_path("/_rig/v1/connection/sse//subscriptions"),
            None
        );
        assert_eq!(
            token_in_path("/_rig/v1/connection/sse/a/b/subscriptions"),
            None
        );
        assert_eq!(
            token_in_internal_path(&crate::peers::internal_subscriptions_path("tok")),
            Some("tok")
        );
    }

    #[test]
    fn accept_allows_json_ranges_and_refuses_others_and_q_zero() {
        assert!(accepts_json(&HeaderMap::new()));
        assert!(accepts_json(&headers(&[(
            header::ACCEPT,
            "text/html, application/*;q=0.5"
        )])));
        assert!(accepts_json(&headers(&[(header::ACCEPT, "*/*")])));
        assert!(accepts_json(&headers(&[(
            header::ACCEPT,
            "Application/JSON"
        )])));
        assert!(!accepts_json(&headers(&[(header::ACCEPT, "text/html")])));
        assert!(!accepts_json(&headers(&[(
            header::ACCEPT,
            "application/json;q=0"
        )])));
    }

    #[test]
    fn content_type_must_be_json_with_any_parameters() {
        assert!(is_json(&headers(&[(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8"
        )])));
        assert!(!is_json(&headers(&[(header::CONTENT_TYPE, "text/plain")])));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn the_body_must_hold_a_subscriptions_list() {
        assert!(subscriptions_field(br#"{"subscriptions":[]}"#).is_ok());
        let err = subscriptions_field(b"nope").expect_err("not JSON");
        assert!(err.starts_with("Expected JSON encoded body."), "{err}");
        let err = subscriptions_field(br#"{"subs":[]}"#).expect_err("absent");
        assert!(
            err.starts_with("Expected field \"subscriptions\" is not present."),
            "{err}"
        );
        assert!(err.contains(r#"{"subs":[]}"#), "{err}");
        let err = subscriptions_field(br#"[1]"#).expect_err("not an object");
        assert!(err.contains("is not present"), "{err}");
        let err = subscriptions_field(br#"{"subscriptions":"x"}"#).expect_err("not a list");
        assert!(err.contains("got a string"), "{err}");
    }
}
