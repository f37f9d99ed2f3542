//! The access rules `EventRoute`s declare (`subscriptionCheck`, `submissionCheck`,
//! `source.http.enabled`), proven both ways on running data planes. Standalone mode
//! (`e2e/tests/access_rules.rs`) and cluster mode (`e2e/tests/cluster_snapshots.rs`) run the same
//! [`prove`] against the same [`manifests`], so both modes are shown to mean the same thing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use crate::clients::LP;
use crate::http::{form_encode, request, send};
use crate::sse::{self, Connect};

/// `JWT_SECRET_KEY` of the data planes under test.
pub const SECRET: &str = "access-rules-secret-0123456789abcdef";
/// The user the external check allows.
pub const ALLOWED_USER: &str = "alice";
const T: Duration = Duration::from_secs(30);

/// An HS256 JWT signed with `secret` carrying `claims` plus an `exp` an hour ahead.
pub fn hs256(secret: &str, claims: serde_json::Value) -> String {
    let mut claims = claims;
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    claims["exp"] = json!(exp);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// An HS256 JWT for user `sub`, valid for an hour.
pub fn token(sub: &str) -> String {
    token_in_session(sub, &format!("{sub}-session"))
}

/// An HS256 JWT for user `sub` in session `jti`, valid for an hour.
pub fn token_in_session(sub: &str, jti: &str) -> String {
    hs256(SECRET, json!({"sub": sub, "jti": jti}))
}

/// The `sub` of a JWT signed with [`SECRET`].
fn subject(jwt: &str) -> Option<String> {
    let data = jsonwebtoken::decode::<serde_json::Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
    )
    .ok()?;
    data.claims["sub"].as_str().map(str::to_owned)
}

/// An external check service (RIG's URL contract): 200 when the request carries
/// [`ALLOWED_USER`]'s token, 403 otherwise. It records every body it was sent.
pub async fn check_service() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let ok = req
                            .headers()
                            .get(header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Bearer "))
                            .is_some_and(|jwt| subject(jwt).as_deref() == Some(ALLOWED_USER));
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        log.lock()
                            .expect("log")
                            .push(String::from_utf8_lossy(&body.unwrap_or_default()).into());
                        let mut res = hyper::Response::new(Full::new(Bytes::new()));
                        *res.status_mut() = if ok {
                            StatusCode::OK
                        } else {
                            StatusCode::FORBIDDEN
                        };
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// The `EventRoute`s under test (namespace-less; `sealed_topic` must exist when Kafka is on):
/// - `acc.secret`: subscribing and publishing need a valid JWT;
/// - `acc.sealed`: never published over HTTP (`source.http.enabled: false`);
/// - `acc.ext`: subscribing is decided by the external check at `check`, for subscriptions given
///   and derived from the JWT (`user` from `/sub`); publishing too.
///
/// `acc.plain` is named by no route: the process-wide checks (`no_check`) apply.
pub fn manifests(check: SocketAddr, sealed_topic: &str) -> String {
    format!(
        "apiVersion: rig.dev/v1alpha1\nkind: EventRoute\nmetadata:\n  name: secured\nspec:\n  source: {{http: {{enabled: true}}}}\n  events: [{{type: acc.secret}}]\n  subscriptionCheck: {{mode: ValidJwt}}\n  submissionCheck: {{mode: ValidJwt}}\n\
---\napiVersion: rig.dev/v1alpha1\nkind: EventRoute\nmetadata:\n  name: sealed\nspec:\n  source: {{kafka: {{topics: [{sealed_topic}]}}, http: {{enabled: false}}}}\n  events: [{{type: acc.sealed}}]\n\
---\napiVersion: rig.dev/v1alpha1\nkind: EventRoute\nmetadata:\n  name: external\nspec:\n  source: {{http: {{enabled: true}}}}\n  events:\n    - type: acc.ext\n      extractors: [{{field: user, eventPointer: /data/user, jwtPointer: /sub}}]\n  subscriptionCheck: {{mode: External, url: 'http://{check}/subscriptions'}}\n  submissionCheck: {{mode: External, url: 'http://{check}/submissions'}}\n"
    )
}

fn subs(types: &[&str]) -> String {
    let list: Vec<_> = types.iter().map(|t| json!({"eventType": t})).collect();
    form_encode(&serde_json::Value::Array(list).to_string())
}

async fn connect(addr: SocketAddr, query: &str) -> Connect {
    sse::connect(addr, &format!("/_rig/v1/connection/sse?{query}"), &[])
        .await
        .expect("connect")
}

fn event(event_type: &str) -> String {
    json!({"specversion": "1.0", "type": event_type, "source": "/e2e", "id": crate::unique_name("a"), "data": {"user": "alice"}})
        .to_string()
}

async fn publish(
    addr: SocketAddr,
    path: &str,
    event_type: &str,
    jwt: Option<&str>,
) -> (u16, String) {
    let mut req = request(Method::POST, addr, path).header(
        header::CONTENT_TYPE,
        "application/cloudevents+json; charset=utf-8",
    );
    if let Some(jwt) = jwt {
        req = req.header(header::AUTHORIZATION, format!("Bearer {jwt}"));
    }
    let (status, _, body) = send(
        addr,
        req.body(Full::new(Bytes::from(event(event_type))))
            .expect("request"),
    )
    .await
    .expect("publish");
    (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
}

async fn put_subscriptions(
    addr: SocketAddr,
    token: &str,
    types: &[&str],
    jwt: Option<&str>,
) -> (u16, String) {
    let list: Vec<_> = types.iter().map(|t| json!({"eventType": t})).collect();
    let mut req = request(
        Method::PUT,
        addr,
        &format!("/_rig/v1/connection/sse/{token}/subscriptions"),
    )
    .header(header::CONTENT_TYPE, "application/json");
    if let Some(jwt) = jwt {
        req = req.header(header::AUTHORIZATION, format!("Bearer {jwt}"));
    }
    let body = json!({"subscriptions": list}).to_string();
    let (status, _, body) = send(
        addr,
        req.body(Full::new(Bytes::from(body))).expect("request"),
    )
    .await
    .expect("put");
    (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
}

fn refused(answer: Connect) -> (u16, String) {
    match answer {
        Connect::Refused(status, _, body) => (status.as_u16(), body),
        Connect::Stream(_) => panic!("the connection was accepted"),
    }
}

/// Every access rule of [`manifests`], allowed and refused, on the data plane at `inbound` /
/// `internal`. `checks` is the external check service's log.
pub async fn prove(inbound: SocketAddr, internal: SocketAddr, checks: &Arc<Mutex<Vec<String>>>) {
    let alice = token(ALLOWED_USER);
    let bob = token("bob");
    let denied = (400, "Subscription denied (not authorized).".to_owned());

    // subscriptionCheck ValidJwt: SSE, WebSocket and long-polling without a JWT are refused …
    assert_eq!(
        refused(connect(inbound, &format!("subscriptions={}", subs(&["acc.secret"]))).await),
        denied,
        "SSE without a JWT"
    );
    // WebSocket: upgraded, then closed with RIG's 1000 `Bad request.` (no event reaches it).
    let mut ws =
        crate::clients::ws_open(inbound, &format!("subscriptions={}", subs(&["acc.secret"]))).await;
    assert_eq!(
        crate::clients::ws_close(&mut ws).await,
        (1000, "Bad request.".to_owned()),
        "WebSocket without a JWT"
    );
    let (status, body) = crate::http::get(
        inbound,
        &format!("{LP}?subscriptions={}", subs(&["acc.secret"])),
    )
    .await
    .expect("long-polling");
    assert_eq!((status, body), denied.clone(), "long-polling without a JWT");
    // … and with one they are accepted; the type not named by any route needs nothing.
    let (mut secret, _, _) = sse::open_greeted(
        inbound,
        &format!(
            "/_rig/v1/connection/sse?jwt={alice}&subscriptions={}",
            subs(&["acc.secret"])
        ),
        &[],
        T,
    )
    .await
    .expect("SSE with a JWT");
    let (mut plain, plain_token, _) = sse::open_greeted(
        inbound,
        &format!(
            "/_rig/v1/connection/sse?subscriptions={}",
            subs(&["acc.plain"])
        ),
        &[],
        T,
    )
    .await
    .expect("SSE to a type without a route");

    // submissionCheck ValidJwt on POST /_rig/v1/events.
    assert_eq!(
        publish(inbound, "/_rig/v1/events", "acc.secret", None).await,
        (403, "Submission denied.".to_owned())
    );
    assert_eq!(
        publish(inbound, "/_rig/v1/events", "acc.secret", Some(&alice))
            .await
            .0,
        202
    );
    let got = secret
        .until(T, |e| e.event == "acc.secret")
        .await
        .expect("the allowed event");
    assert_eq!(got.last().expect("one").json()["data"]["user"], "alice");
    assert_eq!(
        publish(inbound, "/_rig/v1/events", "acc.plain", None)
            .await
            .0,
        202
    );
    plain
        .until(T, |e| e.event == "acc.plain")
        .await
        .expect("an event of a type without a route");

    // source.http.enabled false: refused on both publishing endpoints, even with a JWT.
    for (addr, path) in [(inbound, "/_rig/v1/events"), (internal, "/v3/messages")] {
        assert_eq!(
            publish(addr, path, "acc.sealed", Some(&alice)).await,
            (403, "Submission denied.".to_owned()),
            "{path}"
        );
    }

    // Subscription updates: the route's check applies to the new set.
    assert_eq!(
        put_subscriptions(inbound, &plain_token, &["acc.secret"], None).await,
        (403, "Subscription denied.".to_owned())
    );
    assert_eq!(
        put_subscriptions(inbound, &plain_token, &["acc.secret"], Some(&alice))
            .await
            .0,
        204
    );
    assert_eq!(
        put_subscriptions(inbound, &plain_token, &["acc.plain"], None)
            .await
            .0,
        204
    );

    // External: the service decides on given subscriptions and on those derived from the JWT.
    let before = checks.lock().expect("log").len();
    assert_eq!(
        refused(connect(inbound, &format!("jwt={bob}")).await),
        denied,
        "bob's JWT-derived subscription to acc.ext is refused by the external check"
    );
    assert_eq!(
        refused(connect(inbound, &format!("subscriptions={}", subs(&["acc.ext"]))).await),
        denied,
        "no JWT, given subscription"
    );
    sse::open_greeted(
        inbound,
        &format!("/_rig/v1/connection/sse?jwt={alice}"),
        &[],
        T,
    )
    .await
    .expect("alice's JWT-derived subscription is allowed");
    let log = checks.lock().expect("log");
    assert_eq!(log.len() - before, 3, "one check per connect: {log:?}");
    assert!(
        log[before].contains("acc.ext") && log[before].contains("bob"),
        "{log:?}"
    );
    drop(log);
}
