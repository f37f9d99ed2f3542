//! Closing connections at token expiry (`RIG_CLOSE_AT_TOKEN_EXPIRY`, beyond RIG) against the real
//! data plane: SSE, WebSocket and long-polling connections whose JWT expires are closed (SSE and
//! long-polling with `rig.session_expired`, WebSocket with close 1000 `Session expired.`), while
//! connections with a longer token, and a connection whose token was refreshed by a subscription
//! update, keep receiving events. With the setting off (the default), a connection outlives its
//! token, as in RIG.
//!
//! A connection is closed when its token stops being accepted (`exp` plus the verifier's 5 s
//! leeway). The tests wait for that with deadlines, never with sleeps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::http::{Method, StatusCode, header};
use bytes::Bytes;
use http_body_util::Full;
use rig_e2e::clients::{self, Poller, Ws, ws_close, ws_event_type};
use rig_e2e::dataplane::{DataPlane, DataPlaneConfig};
use rig_e2e::http::form_encode;
use rig_e2e::sse::{self, SseClient};
use rig_e2e::{http, unique_name, wait_until};
use serde_json::{Value, json};

/// Bound on every wait: a 3 s token plus the 5 s leeway closes well within it.
const T: Duration = Duration::from_secs(30);
const SECRET: &str = "token-expiry-test-secret";
const EXPIRED: &str = "rig.session_expired";

async fn dataplane(close_at_expiry: bool) -> DataPlane {
    let mut config = DataPlaneConfig::new()
        .expect("ports")
        .env("JWT_SECRET_KEY", SECRET)
        .env("RIG_LONGPOLLING_HOLD_MS", "300");
    if close_at_expiry {
        config = config.env("RIG_CLOSE_AT_TOKEN_EXPIRY", "true");
    }
    DataPlane::start(config).await.expect("data plane")
}

/// A token of a new session that expires `secs` seconds from now.
fn token(secs: u64) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + secs;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"exp": exp, "jti": unique_name("session")}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// The connect query: the `jwt` and a subscription to `news`.
fn query(jwt: &str) -> String {
    let subs = form_encode(&json!([{"eventType": "news"}]).to_string());
    format!("jwt={jwt}&subscriptions={subs}")
}

async fn publish(dp: &DataPlane, id: &str) {
    let body = json!({"specversion": "1.0", "type": "news", "source": "/e2e", "id": id});
    let (status, _, text) = http::post(
        dp.internal(),
        "/v3/messages",
        "application/cloudevents+json",
        body.to_string(),
    )
    .await
    .expect("publish");
    assert_eq!(status, 202, "{text}");
}

// ---- SSE ----

async fn sse_open(dp: &DataPlane, jwt: &str) -> (SseClient, String) {
    let (client, token, _) = sse::open_greeted(
        dp.inbound(),
        &format!("/_rig/v1/connection/sse?{}", query(jwt)),
        &[],
        T,
    )
    .await
    .expect("SSE connect");
    (client, token)
}

/// Read until an event of `event_type`; returns the types of every event read.
async fn sse_until(client: &mut SseClient, event_type: &str) -> Vec<String> {
    client
        .until(T, |e| e.event == event_type)
        .await
        .unwrap_or_else(|e| panic!("waiting for {event_type}: {e:#}"))
        .into_iter()
        .map(|e| e.event)
        .collect()
}

/// Whether the SSE connect with `jwt` is refused (the token is no longer accepted).
async fn sse_refused(dp: &DataPlane, jwt: &str) -> Option<StatusCode> {
    match sse::connect(
        dp.inbound(),
        &format!("/_rig/v1/connection/sse?{}", query(jwt)),
        &[],
    )
    .await
    .expect("SSE connect")
    {
        sse::Connect::Refused(status, _, _) => Some(status),
        sse::Connect::Stream(_) => None,
    }
}

/// `PUT …/subscriptions` of connection `conn` with `jwt` as bearer token and a `news`
/// subscription.
async fn put_subscriptions(dp: &DataPlane, conn: &str, jwt: &str) -> StatusCode {
    let req = http::request(
        Method::PUT,
        dp.inbound(),
        &format!("/_rig/v1/connection/sse/{conn}/subscriptions"),
    )
    .header(header::CONTENT_TYPE, "application/json")
    .header(header::AUTHORIZATION, format!("Bearer {jwt}"))
    .body(Full::new(Bytes::from(
        r#"{"subscriptions":[{"eventType":"news"}]}"#,
    )))
    .expect("request");
    http::send(dp.inbound(), req).await.expect("PUT").0
}

// ---- WebSocket ----

async fn ws_open(dp: &DataPlane, jwt: &str) -> Ws {
    clients::ws_subscribed(dp.inbound(), &query(jwt)).await
}

async fn poller_open(dp: &DataPlane, jwt: &str) -> Poller {
    Poller::open(dp.inbound(), &query(jwt)).await
}

// ---- tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_closed_when_their_token_expires_and_longer_tokens_keep_receiving() {
    let dp = dataplane(true).await;
    let short = token(3);
    let long = token(3600);

    let (mut sse_short, _) = sse_open(&dp, &short).await;
    let mut ws_short = ws_open(&dp, &short).await;
    let mut lp_short = poller_open(&dp, &short).await;
    let (mut sse_long, _) = sse_open(&dp, &long).await;
    let mut ws_long = ws_open(&dp, &long).await;
    let mut lp_long = poller_open(&dp, &long).await;
    // Opened with the short token, then refreshed by a subscription update with the long one.
    let (mut refreshed, refreshed_token) = sse_open(&dp, &short).await;
    assert_eq!(
        put_subscriptions(&dp, &refreshed_token, &long).await,
        StatusCode::NO_CONTENT
    );
    sse_until(&mut refreshed, "rig.subscriptions_set").await;

    // SSE: rig.session_expired, then the stream ends.
    let seen = sse_until(&mut sse_short, EXPIRED).await;
    assert_eq!(seen, [EXPIRED], "nothing else came before it");
    assert!(
        sse_short.next(T).await.expect("read").is_none(),
        "the stream ends after {EXPIRED}"
    );
    // WebSocket: close 1000 `Session expired.`.
    assert_eq!(
        ws_close(&mut ws_short).await,
        (1000, "Session expired.".to_owned())
    );
    // Long-polling: the session answers rig.session_expired, then ends; the next GET runs the
    // connect checks again and is refused for the expired token.
    lp_short.poll_until(EXPIRED).await;
    let deadline = tokio::time::Instant::now() + T;
    let refused = loop {
        let (status, body) = lp_short.get().await;
        if status != StatusCode::OK {
            break status;
        }
        let answer: Value = serde_json::from_str(&body).expect("poll JSON");
        assert_eq!(answer["events"], json!([]), "nothing after the expiry");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the long-polling session did not end"
        );
    };
    assert_eq!(refused, StatusCode::BAD_REQUEST);

    // The longer tokens' connections, and the refreshed one, keep receiving.
    publish(&dp, "after-expiry").await;
    for client in [&mut sse_long, &mut refreshed] {
        let seen = sse_until(client, "news").await;
        assert!(!seen.iter().any(|t| t == EXPIRED), "{seen:?}");
    }
    assert_eq!(ws_event_type(&mut ws_long).await, "news");
    let seen = lp_long.poll_until("news").await;
    assert!(!seen.iter().any(|t| t == EXPIRED), "{seen:?}");

    for transport in ["sse", "ws", "longpolling"] {
        assert_eq!(
            dp.metric(&format!(
                "rig_connections_expired_total{{transport=\"{transport}\"}}"
            ))
            .await,
            1.0,
            "{transport}"
        );
    }
    assert_eq!(dp.metric("rig_connections{transport=\"sse\"}").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_connection_outlives_its_token() {
    let dp = dataplane(false).await;
    let short = token(3);
    let (mut sse, _) = sse_open(&dp, &short).await;
    // Once the token is refused for new connections, it has expired (leeway included).
    wait_until("the token to be refused", T, || async {
        sse_refused(&dp, &short).await
    })
    .await;
    publish(&dp, "after-expiry").await;
    let seen = sse_until(&mut sse, "news").await;
    assert_eq!(seen, ["news"], "no {EXPIRED}, the event arrives");
    assert_eq!(
        dp.metric("rig_connections_expired_total{transport=\"sse\"}")
            .await,
        0.0
    );
}
