//! HTTP long-polling: `GET /_rig/v1/connection/longpolling` (RIG §2.5), for clients that can use
//! neither SSE nor WebSocket.
//!
//! The protocol is RIG's, carried by two cookies the server sets:
//!
//! - A GET without a usable `connection_token` cookie (absent, tampered with, made by another
//!   process, or naming a session that expired or ended) runs the connect checks (`jwt`,
//!   `subscriptions`, rate limit; 400/429 with RIG's texts) and opens a session. The answer is 200
//!   with the JSON string `"ok"` and the cookies `connection_token=<token>` and
//!   `last_event_id=first_event`. A `last_event_id` query parameter resumes like SSE's
//!   `Last-Event-ID` (missed events, or `rig.connection.gap`).
//! - A GET with the cookie polls: `{"last_event_id":"<token>","events":[…]}`, each element the
//!   event JSON exactly as its producer sent it (the shared frame bytes, spliced, never
//!   re-serialized). The first poll returns `rig.connection.create` and `rig.subscriptions_set`.
//!   With nothing pending the request is held up to the configured hold (RIG: ~5 s), answered as
//!   soon as something arrives, else with `events: []`.
//!
//! The body's `last_event_id` is the resume token of the newest event answered (what a client
//! passes as `?last_event_id=` to resume on any process). The `last_event_id` *cookie* is the
//! session's acknowledgement mark instead (see [`sessions`]): RIG's cookies are `HttpOnly`, so no
//! client reads it, and an answer lost on the way is answered again on the next poll.
//!
//! Cookies: `Path=/` (a gateway behind a path-rewriting ingress is reached under another prefix,
//! where a narrower path would never match), `HttpOnly` (scripts have the token from
//! `rig.connection.create` anyway), `SameSite=Lax` (what browsers assume for RIG's unmarked
//! cookies; a frontend on another site than the gateway would need `SameSite=None; Secure`).

pub mod sessions;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use hyper::Request;
use hyper::body::Incoming;

use self::sessions::{Batch, Polled, Polling};
use super::context::Connections;
use super::open::{self, ConnectParams};
use crate::http::{Body, full, text};
use crate::metrics::Transport;

/// The cookie holding the connection token (an HMAC token of `state.tokens`).
pub const CONNECTION_TOKEN_COOKIE: &str = "connection_token";
/// The cookie holding the acknowledgement mark (the sequence number of the newest frame answered).
pub const LAST_EVENT_ID_COOKIE: &str = "last_event_id";
/// RIG's initial `last_event_id`: nothing received yet.
const FIRST_EVENT: &str = "first_event";
/// Attributes of both cookies (see the module documentation).
const COOKIE_ATTRIBUTES: &str = "; Path=/; HttpOnly; SameSite=Lax";

/// `GET /_rig/v1/connection/longpolling`: poll the session named by the cookie, or open one.
pub async fn get(
    conns: &Arc<Connections>,
    req: &Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    let cookies = Cookies::from_headers(req.headers());
    if let Some(polling) = cookies.connection_token.and_then(|t| find(conns, t)) {
        match polling
            .poll(cookies.acknowledged(), conns.settings.longpolling_hold)
            .await
        {
            Polled::Batch(batch) => return answer(conns, &batch),
            Polled::Ended(batch) => {
                // The hub closed it (session killed, shutdown) and everything was delivered. Not
                // replaced here: a process shutting down must not open sessions, and a killed
                // session's next GET runs the connect checks again.
                tracing::debug!(connection = polling.id(), "long-polling session ended");
                conns.longpolling.remove(polling.id());
                return answer(conns, &batch);
            }
        }
    }
    connect(conns, req, peer).await
}

/// `OPTIONS /_rig/v1/connection/longpolling`: RIG's preflight answer.
pub fn preflight(conns: &Connections) -> Response<Body> {
    let mut res = Response::new(full(""));
    *res.status_mut() = StatusCode::NO_CONTENT;
    let h = res.headers_mut();
    cors(conns, h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("*"),
    );
    res
}

/// The session a `connection_token` cookie names, if it lives in this process.
fn find(conns: &Connections, token: &str) -> Option<Polling> {
    match conns.fanout.tokens().decode(token) {
        Ok(named) if named.owner == conns.fanout.owner() => {
            let polling = conns.longpolling.begin_poll(named.conn);
            if polling.is_none() {
                tracing::debug!(
                    connection = named.conn,
                    "long-polling session unknown or expired: opening a new one"
                );
            }
            polling
        }
        Ok(named) => {
            tracing::debug!(
                owner = %named.owner,
                "long-polling cookie of another process: opening a new session here"
            );
            None
        }
        // RIG answered 500 here; a bad cookie is just no session.
        Err(error) => {
            tracing::debug!(%error, "unusable connection_token cookie: opening a new session");
            None
        }
    }
}

async fn connect(
    conns: &Arc<Connections>,
    req: &Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    let mut params = ConnectParams::from_query(req.uri().query());
    params.trace(req.headers().get("traceparent").map(|v| v.as_bytes()));
    params.client = Some(conns.client_of(peer, req.headers()));
    match open::open_resumed(conns, Transport::LongPolling, &params).await {
        Ok(opened) => {
            conns.longpolling.insert(opened.registration);
            let mut res = json_answer(Bytes::from_static(b"\"ok\""));
            let h = res.headers_mut();
            set_cookie(h, CONNECTION_TOKEN_COOKIE, &opened.token);
            set_cookie(h, LAST_EVENT_ID_COOKIE, FIRST_EVENT);
            cors(conns, h);
            res
        }
        Err(refused) => {
            // Unlike RIG's SSE errors, with CORS headers: a browser script can then read why.
            let mut res = text(refused.status, refused.message);
            cors(conns, res.headers_mut());
            res
        }
    }
}

fn answer(conns: &Connections, batch: &Batch) -> Response<Body> {
    let mut res = json_answer(encode(batch));
    let h = res.headers_mut();
    if batch.seq == 0 {
        set_cookie(h, LAST_EVENT_ID_COOKIE, FIRST_EVENT);
    } else {
        set_cookie(h, LAST_EVENT_ID_COOKIE, &batch.seq.to_string());
    }
    cors(conns, h);
    res
}

/// `{"last_event_id":"…","events":[…]}` with every event's bytes as its producer sent them.
fn encode(batch: &Batch) -> Bytes {
    let id = serde_json::Value::from(batch.last_event_id.as_deref().unwrap_or(FIRST_EVENT));
    let id = id.to_string();
    let events: usize = batch.frames.iter().map(|f| f.json.len() + 1).sum();
    let mut out = BytesMut::with_capacity(id.len() + events + 32);
    out.put_slice(b"{\"last_event_id\":");
    out.put_slice(id.as_bytes());
    out.put_slice(b",\"events\":[");
    for (i, frame) in batch.frames.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(&frame.json);
    }
    out.put_slice(b"]}");
    out.freeze()
}

fn json_answer(body: Bytes) -> Response<Body> {
    let mut res = Response::new(full(body));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

fn cors(conns: &Connections, headers: &mut HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, conns.cors.clone());
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
}

fn set_cookie(headers: &mut HeaderMap, name: &str, value: &str) {
    // Connection tokens are base64url and marks are digits: always valid header bytes.
    if let Ok(value) = HeaderValue::from_str(&format!("{name}={value}{COOKIE_ATTRIBUTES}")) {
        headers.append(header::SET_COOKIE, value);
    }
}

/// The two cookies of a request. The first occurrence of a name wins (browsers send the cookie
/// with the most specific path first); `Cookie` may be split over several headers (HTTP/2).
#[derive(Debug, Default, PartialEq, Eq)]
struct Cookies<'a> {
    connection_token: Option<&'a str>,
    last_event_id: Option<&'a str>,
}

impl<'a> Cookies<'a> {
    fn from_headers(headers: &'a HeaderMap) -> Self {
        let mut cookies = Self::default();
        for value in headers.get_all(header::COOKIE) {
            let Ok(value) = value.to_str() else {
                continue;
            };
            for pair in value.split(';') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                // RIG wrote JSON-encoded values (`"first_event"`).
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                let slot = match name.trim() {
                    CONNECTION_TOKEN_COOKIE => &mut cookies.connection_token,
                    LAST_EVENT_ID_COOKIE => &mut cookies.last_event_id,
                    _ => continue,
                };
                if slot.is_none() && !value.is_empty() {
                    *slot = Some(value);
                }
            }
        }
        cookies
    }

    /// The sequence number of the newest frame the client has; 0 for `first_event`, a missing
    /// cookie or anything else (the session then answers everything it retains).
    fn acknowledged(&self) -> u64 {
        self.last_event_id.and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::CloudEvent;
    use crate::events::frame::Frame;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn cookies_are_read_from_every_cookie_header_first_one_wins() {
        let h = headers(&[
            "a=1; connection_token=abc_-1 ; other=x",
            "connection_token=later; last_event_id=\"first_event\"",
        ]);
        let c = Cookies::from_headers(&h);
        assert_eq!(c.connection_token, Some("abc_-1"));
        assert_eq!(c.last_event_id, Some("first_event"));
        assert_eq!(c.acknowledged(), 0);
        let h = headers(&["last_event_id=42"]);
        let c = Cookies::from_headers(&h);
        assert_eq!(c.connection_token, None);
        assert_eq!(c.acknowledged(), 42);
    }

    #[test]
    fn malformed_cookies_are_ignored() {
        let h = headers(&["garbage; =; connection_token=; last_event_id=-3"]);
        let c = Cookies::from_headers(&h);
        assert_eq!(c.connection_token, None);
        assert_eq!(c.acknowledged(), 0);
    }

    #[test]
    fn the_answer_splices_the_producers_bytes() {
        let pretty = CloudEvent::new_rig("t", serde_json::json!({"n": 1}));
        let mut frame = Frame::new(&pretty, Some("1~a/0:1"));
        frame.json = Bytes::from_static(b"{\n  \"type\": \"t\", \"n\": [1, 2]\n}");
        let batch = Batch {
            frames: vec![Arc::new(frame), Arc::new(Frame::new(&pretty, None))],
            seq: 7,
            last_event_id: Some("1~a/0:1".to_owned()),
        };
        let body = encode(&batch);
        let expected = format!(
            "{{\"last_event_id\":\"1~a/0:1\",\"events\":[{{\n  \"type\": \"t\", \"n\": [1, 2]\n}},{}]}}",
            std::str::from_utf8(&pretty.json).expect("utf8")
        );
        assert_eq!(std::str::from_utf8(&body).expect("utf8"), expected);
        let value: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(value["events"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn an_empty_answer_still_names_a_position() {
        let body = encode(&Batch::default());
        assert_eq!(
            &body[..],
            b"{\"last_event_id\":\"first_event\",\"events\":[]}"
        );
    }
}
