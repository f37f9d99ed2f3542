//! Session revocation against the real data plane: revoking a session (RIG's
//! `POST /v3/session-blacklist`, or a `Blacklist` manifest) closes that session's SSE, WebSocket and
//! long-polling connections at once while other sessions keep receiving events; the session's
//! tokens are then refused on connect and on subscription updates until the revocation expires.
//! Also: the API's validation answers, and the per-session connection limit.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::http::{HeaderMap, Method, StatusCode, header};
use bytes::Bytes;
use http_body_util::Full;
use rig_e2e::clients::{self, Poller, Ws, ws_close, ws_event_type};
use rig_e2e::dataplane::{DataPlane, DataPlaneConfig};
use rig_e2e::http::form_encode;
use rig_e2e::sse::{self, SseClient};
use rig_e2e::{http, unique_name, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);
const SECRET: &str = "revocation-test-secret";

// ---- set-up ----

async fn dataplane(extra: &[(&str, &str)]) -> DataPlane {
    let mut config = DataPlaneConfig::new()
        .expect("ports")
        .env("JWT_SECRET_KEY", SECRET)
        .env("RIG_LONGPOLLING_HOLD_MS", "300");
    for (k, v) in extra {
        config = config.env(k, *v);
    }
    DataPlane::start(config).await.expect("data plane")
}

fn token(jti: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"exp": exp, "jti": jti}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// The connect query: the `jwt` (if any) and a subscription to `news`.
fn query(jwt: Option<&str>) -> String {
    let subs = form_encode(&json!([{"eventType": "news"}]).to_string());
    match jwt {
        Some(jwt) => format!("jwt={jwt}&subscriptions={subs}"),
        None => format!("subscriptions={subs}"),
    }
}

/// The text a connect with a revoked session's token is refused with.
fn revoked_text(session: &str) -> String {
    format!(
        "could not parse subscriptions: could not decode JWT: Ignoring blacklisted JWT with ID \
         \"{session}\"."
    )
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

async fn blacklist(dp: &DataPlane, content_type: &str, body: &str) -> (u16, HeaderMap, String) {
    http::post(
        dp.internal(),
        "/v3/session-blacklist",
        content_type,
        body.to_owned(),
    )
    .await
    .expect("POST /v3/session-blacklist")
}

async fn revoke(dp: &DataPlane, session: &str, validity: Value) {
    let body = json!({"sessionId": session, "validityInSeconds": validity}).to_string();
    let (status, _, text) = blacklist(dp, "application/json", &body).await;
    assert_eq!(status, 201, "{text}");
}

async fn is_listed(dp: &DataPlane, session: &str) -> (u16, String) {
    http::get(
        dp.internal(),
        &format!("/v3/session-blacklist/{}", form_encode(session)),
    )
    .await
    .expect("GET /v3/session-blacklist/<id>")
}

// ---- SSE ----

/// An SSE connection past its greetings, with its connection token.
async fn sse_open(dp: &DataPlane, jwt: Option<&str>) -> (SseClient, String) {
    let mut client = sse::open(
        dp.inbound(),
        &format!("/_rig/v1/connection/sse?{}", query(jwt)),
        &[],
    )
    .await
    .expect("SSE connect");
    let greetings = client
        .until(T, |e| e.event == "rig.subscriptions_set")
        .await
        .expect("greetings");
    let token = greetings[0].json()["data"]["connection_token"]
        .as_str()
        .expect("connection token")
        .to_owned();
    (client, token)
}

async fn sse_refused(dp: &DataPlane, jwt: &str) -> (StatusCode, String) {
    match sse::connect(
        dp.inbound(),
        &format!("/_rig/v1/connection/sse?{}", query(Some(jwt))),
        &[],
    )
    .await
    .expect("SSE connect")
    {
        sse::Connect::Refused(status, _, text) => (status, text),
        sse::Connect::Stream(_) => panic!("the SSE connect must be refused"),
    }
}

/// Read until an event of `event_type`; returns it.
async fn sse_until(client: &mut SseClient, event_type: &str) -> sse::SseEvent {
    let seen = client
        .until(T, |e| e.event == event_type)
        .await
        .unwrap_or_else(|e| panic!("waiting for {event_type}: {e:#}"));
    seen.last().cloned().expect("the event")
}

// ---- WebSocket and long-polling (shared clients, connect query from `query`) ----

async fn ws_subscribed(dp: &DataPlane, jwt: &str) -> Ws {
    clients::ws_subscribed(dp.inbound(), &query(Some(jwt))).await
}

async fn ws_open(dp: &DataPlane, jwt: &str) -> Ws {
    clients::ws_open(dp.inbound(), &query(Some(jwt))).await
}

fn poller(dp: &DataPlane, jwt: Option<&str>) -> Poller {
    Poller::new(dp.inbound(), &query(jwt))
}

async fn poller_open(dp: &DataPlane, jwt: &str) -> Poller {
    Poller::open(dp.inbound(), &query(Some(jwt))).await
}

// ---- tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_session_closes_its_connections_and_refuses_its_tokens_others_keep_going() {
    let dp = dataplane(&[]).await;
    let (x, y) = (unique_name("session-x"), unique_name("session-y"));
    let (jwt_x, jwt_y) = (token(&x), token(&y));

    let (mut sse_x, _) = sse_open(&dp, Some(&jwt_x)).await;
    let (mut sse_y, sse_y_token) = sse_open(&dp, Some(&jwt_y)).await;
    let mut ws_x = ws_subscribed(&dp, &jwt_x).await;
    let mut ws_y = ws_subscribed(&dp, &jwt_y).await;
    let mut lp_x = poller_open(&dp, &jwt_x).await;
    let mut lp_y = poller_open(&dp, &jwt_y).await;

    publish(&dp, "before").await;
    for client in [&mut sse_x, &mut sse_y] {
        sse_until(client, "news").await;
    }
    for ws in [&mut ws_x, &mut ws_y] {
        assert_eq!(ws_event_type(ws).await, "news");
    }
    for lp in [&mut lp_x, &mut lp_y] {
        lp.poll_until("news").await;
    }

    // Revoke X through RIG's API.
    let body = json!({"sessionId": x, "validityInSeconds": 600}).to_string();
    let (status, headers, text) = blacklist(&dp, "application/json", &body).await;
    assert_eq!((status, text.as_str()), (201, "{}"));
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(h("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(
        h("location"),
        Some(format!("/v3/session-blacklist/{x}").as_str())
    );
    assert_eq!(h("access-control-allow-origin"), Some("*"));

    // X's SSE gets rig.session_killed, then the stream ends.
    let killed = sse_until(&mut sse_x, "rig.session_killed").await;
    assert_eq!(killed.json()["type"], "rig.session_killed");
    assert!(
        sse_x.next(T).await.expect("read").is_none(),
        "the stream ends after rig.session_killed"
    );
    // X's WebSocket is closed with RIG's code and reason.
    assert_eq!(
        ws_close(&mut ws_x).await,
        (1000, "Session killed.".to_owned())
    );
    // X's long-polling session answers rig.session_killed, then ends: the next GET runs the
    // connect checks again and is refused for the revoked token.
    lp_x.poll_until("rig.session_killed").await;
    let deadline = tokio::time::Instant::now() + T;
    let refused = loop {
        let (status, body) = lp_x.get().await;
        if status != StatusCode::OK {
            break (status, body);
        }
        let answer: Value = serde_json::from_str(&body).expect("poll JSON");
        assert_eq!(answer["events"], json!([]), "nothing after the kill");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the long-polling session did not end"
        );
    };
    assert_eq!(refused, (StatusCode::BAD_REQUEST, revoked_text(&x)));

    // Y's connections keep receiving.
    publish(&dp, "after").await;
    let event = sse_until(&mut sse_y, "news").await;
    assert_eq!(event.json()["id"], "after");
    assert_eq!(ws_event_type(&mut ws_y).await, "news");
    lp_y.poll_until("news").await;

    // X's token is refused everywhere now.
    assert_eq!(
        sse_refused(&dp, &jwt_x).await,
        (StatusCode::BAD_REQUEST, revoked_text(&x))
    );
    let mut ws = ws_open(&dp, &jwt_x).await;
    assert_eq!(ws_close(&mut ws).await, (1000, "Bad request.".to_owned()));
    let mut lp = poller(&dp, Some(&jwt_x));
    assert_eq!(lp.get().await, (StatusCode::BAD_REQUEST, revoked_text(&x)));
    let req = http::request(
        Method::PUT,
        dp.inbound(),
        &format!("/_rig/v1/connection/sse/{sse_y_token}/subscriptions"),
    )
    .header(header::CONTENT_TYPE, "application/json")
    .header(header::AUTHORIZATION, format!("Bearer {jwt_x}"))
    .body(Full::new(Bytes::from(r#"{"subscriptions":[]}"#)))
    .expect("request");
    let (status, _, body) = http::send(dp.inbound(), req).await.expect("PUT");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!(
            "cannot accept subscription request: invalid authorization header: could not decode \
             JWT: Ignoring blacklisted JWT with ID \"{x}\"."
        )
    );

    // The API reports the entry; an unknown session is not listed.
    assert_eq!(is_listed(&dp, &x).await, (200, "{}".to_owned()));
    assert_eq!(
        is_listed(&dp, "never-revoked").await,
        (404, "Not found.".to_owned())
    );
    assert_eq!(dp.metric("rig_sessions_killed_total").await, 3.0);
    assert_eq!(dp.metric("rig_blacklist_entries").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_update_with_a_bearer_token_joins_its_session() {
    let dp = dataplane(&[]).await;
    let z = unique_name("session-z");
    let (mut anonymous, conn_token) = sse_open(&dp, None).await;
    let req = http::request(
        Method::PUT,
        dp.inbound(),
        &format!("/_rig/v1/connection/sse/{conn_token}/subscriptions"),
    )
    .header(header::CONTENT_TYPE, "application/json")
    .header(header::AUTHORIZATION, format!("Bearer {}", token(&z)))
    .body(Full::new(Bytes::from(
        r#"{"subscriptions":[{"eventType":"news"}]}"#,
    )))
    .expect("request");
    let (status, _, body) = http::send(dp.inbound(), req).await.expect("PUT");
    assert_eq!(status, StatusCode::NO_CONTENT, "{body:?}");
    sse_until(&mut anonymous, "rig.subscriptions_set").await;

    revoke(&dp, &z, json!(60)).await;
    sse_until(&mut anonymous, "rig.session_killed").await;
    assert!(anonymous.next(T).await.expect("read").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blacklist_api_validates_like_rig() {
    let dp = dataplane(&[]).await;
    for (body, expected) in [
        (r#"{}"#, r#"Missing value for "sessionId""#),
        (
            r#"{"sessionId":"","validityInSeconds":10}"#,
            r#"Expected non-empty string, got """#,
        ),
        (
            r#"{"sessionId":7,"validityInSeconds":10}"#,
            "Expected non-empty string, got 7",
        ),
        (
            r#"{"sessionId":"s"}"#,
            r#"Missing value for "validityInSeconds""#,
        ),
        (
            r#"{"sessionId":"s","validityInSeconds":"ten"}"#,
            r#"Expected a number, got "ten""#,
        ),
        (
            r#"{"sessionId":"s","validityInSeconds":0}"#,
            "Expected a positive number, got 0",
        ),
        (
            r#"{"sessionId":"s","validityInSeconds":"-3"}"#,
            "Expected a positive number, got -3",
        ),
        (
            r#"{"sessionId":"s","validityInSeconds":true}"#,
            "Expected a positive number, got true",
        ),
    ] {
        let (status, headers, text) = blacklist(&dp, "application/json", body).await;
        assert_eq!((status, text.as_str()), (400, expected), "{body}");
        assert_eq!(
            headers
                .get("access-control-allow-origin")
                .and_then(|v| v.to_str().ok()),
            Some("*")
        );
    }
    assert_eq!(is_listed(&dp, "s").await.0, 404, "nothing was revoked");

    let (status, _, _) = blacklist(&dp, "text/plain", "sessionId=s").await;
    assert_eq!(status, 415);

    // Form-encoded bodies, and an id that needs percent-encoding in `location`.
    let odd = "user 1/session?2";
    let body = format!("sessionId={}&validityInSeconds=60", form_encode(odd));
    let (status, headers, _) = blacklist(&dp, "application/x-www-form-urlencoded", &body).await;
    assert_eq!(status, 201);
    let location = headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("location")
        .to_owned();
    assert_eq!(location, "/v3/session-blacklist/user%201%2Fsession%3F2");
    let (status, text) = http::get(dp.internal(), &location).await.expect("GET");
    assert_eq!((status, text.as_str()), (200, "{}"));

    let req = http::request(Method::OPTIONS, dp.internal(), "/v3/session-blacklist")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, headers, _) = http::send(dp.internal(), req).await.expect("OPTIONS");
    assert_eq!(status, 204);
    assert_eq!(
        headers
            .get("access-control-allow-methods")
            .and_then(|v| v.to_str().ok()),
        Some("POST")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_expires_after_its_validity_and_the_session_connects_again() {
    let dp = dataplane(&[]).await;
    let s = unique_name("session-short");
    let jwt = token(&s);
    // RIG accepts the validity as a numeric string too.
    revoke(&dp, &s, json!("1")).await;
    assert_eq!(is_listed(&dp, &s).await.0, 200);
    assert_eq!(sse_refused(&dp, &jwt).await.0, StatusCode::BAD_REQUEST);
    wait_until("the revocation to expire", T, || async {
        (is_listed(&dp, &s).await.0 == 404).then_some(())
    })
    .await;
    let (mut client, _) = sse_open(&dp, Some(&jwt)).await;
    publish(&dp, "again").await;
    sse_until(&mut client, "news").await;
    wait_until("the sweeper to remove the entry", T, || async {
        (dp.metric("rig_blacklist_entries").await == 0.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blacklist_manifests_revoke_at_start_and_on_reload_and_deleting_one_lifts_it() {
    let dir = std::env::temp_dir().join(unique_name("rig-blacklists"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let manifest = |name: &str, session: &str, expires: &str| {
        format!(
            "apiVersion: rig.dev/v1alpha1\nkind: Blacklist\nmetadata:\n  name: {name}\nspec:\n  \
             sessionId: {session}\n  expiresAt: \"{expires}\"\n  reason: e2e\n"
        )
    };
    let (m, old, p) = (
        unique_name("session-m"),
        unique_name("session-old"),
        unique_name("session-p"),
    );
    std::fs::write(
        dir.join("m.yaml"),
        manifest("m", &m, "2999-01-01T00:00:00Z"),
    )
    .expect("write");
    std::fs::write(
        dir.join("old.yaml"),
        manifest("old", &old, "2000-01-01T00:00:00+01:00"),
    )
    .expect("write");
    let dp = dataplane(&[("RIG_MANIFESTS", dir.to_str().expect("utf-8 path"))]).await;

    // At start: M is revoked, the expired entry revokes nothing.
    assert_eq!(
        sse_refused(&dp, &token(&m)).await,
        (StatusCode::BAD_REQUEST, revoked_text(&m))
    );
    assert_eq!(is_listed(&dp, &m).await.0, 200);
    assert_eq!(is_listed(&dp, &old).await.0, 404);
    sse_open(&dp, Some(&token(&old))).await;

    // A Blacklist added while P is connected closes P's connection on reload.
    let (mut client_p, _) = sse_open(&dp, Some(&token(&p))).await;
    std::fs::write(
        dir.join("p.yaml"),
        manifest("p", &p, "2999-01-01T00:00:00+02:00"),
    )
    .expect("write");
    sse_until(&mut client_p, "rig.session_killed").await;
    assert!(client_p.next(T).await.expect("read").is_none());
    assert_eq!(
        sse_refused(&dp, &token(&p)).await.0,
        StatusCode::BAD_REQUEST
    );

    // Deleting M's Blacklist lifts the revocation.
    std::fs::remove_file(dir.join("m.yaml")).expect("remove");
    wait_until("M's revocation to be lifted", T, || async {
        (is_listed(&dp, &m).await.0 == 404).then_some(())
    })
    .await;
    sse_open(&dp, Some(&token(&m))).await;
    assert_eq!(is_listed(&dp, &p).await.0, 200, "P stays revoked");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_session_connection_limit_answers_429() {
    let dp = dataplane(&[("MAX_CONNECTIONS_PER_SESSION", "2")]).await;
    let (l, other) = (unique_name("session-l"), unique_name("session-o"));
    let jwt = token(&l);
    let (first, _) = sse_open(&dp, Some(&jwt)).await;
    let _second = ws_subscribed(&dp, &jwt).await;
    let expected = (
        StatusCode::TOO_MANY_REQUESTS,
        "Reached maximum number of connections for this session".to_owned(),
    );
    assert_eq!(sse_refused(&dp, &jwt).await, expected);
    assert_eq!(poller(&dp, Some(&jwt)).get().await, expected);
    let mut ws = ws_open(&dp, &jwt).await;
    assert_eq!(ws_close(&mut ws).await, (1000, expected.1.clone()));
    sse_open(&dp, Some(&token(&other))).await;
    sse_open(&dp, None).await;

    // Closing one of the session's connections makes room again.
    drop(first);
    wait_until(
        "room for another connection of the session",
        T * 2,
        || async {
            match sse::connect(
                dp.inbound(),
                &format!("/_rig/v1/connection/sse?{}", query(Some(&jwt))),
                &[],
            )
            .await
            .expect("connect")
            {
                sse::Connect::Stream(client) => Some(client),
                sse::Connect::Refused(status, _, _) => {
                    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
                    None
                }
            }
        },
    )
    .await;
}

/// Deliberately different from RIG (which checked only `jti`): the session claim is the one
/// `JWT_SESSION_FIELD` names, for revocation everywhere. With `/sid`, revoking the token's `jti`
/// does nothing; revoking its `sid` ends its connection and refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_claim_is_the_one_jwt_session_field_names() {
    let dp = dataplane(&[("JWT_SESSION_FIELD", "/sid")]).await;
    let jwt = rig_e2e::access::hs256(SECRET, json!({"jti": "token-j1", "sid": "session-s1"}));
    let (mut client, _) = sse_open(&dp, Some(&jwt)).await;
    revoke(&dp, "token-j1", json!(60)).await;
    // The stream still gets events after the jti's revocation.
    publish(&dp, "after-jti").await;
    let event = sse_until(&mut client, "news").await;
    assert_eq!(event.json()["id"], "after-jti");
    revoke(&dp, "session-s1", json!(60)).await;
    sse_until(&mut client, "rig.session_killed").await;
    let (status, text) = sse_refused(&dp, &jwt).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("session-s1"), "{text}");
}
