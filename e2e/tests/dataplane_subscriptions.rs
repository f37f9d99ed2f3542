//! Replacing a connection's subscriptions (`PUT .../<token>/subscriptions`), on the process that
//! holds it or through another one; and `SUBSCRIPTION_CHECK` / `SUBMISSION_CHECK` with a real
//! external check service and with `jwt_validation`. Real `rig-dataplane` processes, no Kafka
//! (events are published over HTTP).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rig_e2e::dataplane::{DataPlane, DataPlaneConfig};
use rig_e2e::http::form_encode;
use rig_e2e::sse::{self, Connect, SseClient, SseEvent};
use rig_e2e::{http, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);
const SECRET: &str = "e2e-subscriptions-secret";
const TOKEN_KEY: &str = "e2e-shared-connection-token-key";
const EXTRACTORS: &str = r#"{"greeting":{"name":{"stable_field_index":0,"event":{"json_pointer":"/data/name"},"jwt":{"json_pointer":"/username"}}}}"#;

// ---- helpers -------------------------------------------------------------------------------

fn jwt(claims: Value) -> String {
    rig_e2e::access::hs256(SECRET, claims)
}

fn connect_path(subs: Option<Value>, jwt: Option<&str>) -> String {
    let mut query = Vec::new();
    if let Some(subs) = subs {
        query.push(format!("subscriptions={}", form_encode(&subs.to_string())));
    }
    if let Some(jwt) = jwt {
        query.push(format!("jwt={}", form_encode(jwt)));
    }
    format!("/_rig/v1/connection/sse?{}", query.join("&"))
}

/// Open an SSE connection; returns the client (past the greetings), the token and the initial set.
async fn subscribe(
    addr: SocketAddr,
    subs: Option<Value>,
    jwt: Option<&str>,
) -> (SseClient, String, Value) {
    sse::open_greeted(addr, &connect_path(subs, jwt), &[], T)
        .await
        .expect("SSE connect and greetings")
}

async fn refused(addr: SocketAddr, subs: Option<Value>, jwt: Option<&str>) -> (u16, String) {
    match sse::connect(addr, &connect_path(subs, jwt), &[])
        .await
        .expect("connect")
    {
        Connect::Refused(status, _, body) => (status.as_u16(), body),
        Connect::Stream(_) => panic!("the connection was accepted"),
    }
}

/// `PUT` a subscription body (JSON content type unless `headers` say otherwise).
async fn put(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::Answer) {
    let mut req = http::request(::http::Method::PUT, addr, path);
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        if !v.is_empty() {
            req = req.header(*k, *v);
        }
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let answer = http::send(addr, req).await.expect("PUT");
    (answer.0.as_u16(), answer)
}

fn body_text(answer: &http::Answer) -> String {
    String::from_utf8_lossy(&answer.2).into_owned()
}

fn subs_path(token: &str) -> String {
    format!("/_rig/v1/connection/sse/{token}/subscriptions")
}

fn subs_body(subs: Value) -> String {
    json!({ "subscriptions": subs }).to_string()
}

fn ce(event_type: &str, id: &str, data: Value) -> String {
    json!({"specversion": "1.0", "type": event_type, "source": "/e2e", "id": id, "data": data})
        .to_string()
}

async fn publish(addr: SocketAddr, event: String, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = http::request(::http::Method::POST, addr, "/_rig/v1/events")
        .header("content-type", "application/cloudevents+json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(event))).expect("request");
    let (status, _, body) = http::send(addr, req).await.expect("POST");
    (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
}

async fn next_event(client: &mut SseClient) -> SseEvent {
    client.next(T).await.expect("read").expect("an event")
}

// ---- a real external check service ---------------------------------------------------------

/// One request the check service received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    content_type: Option<String>,
    authorization: Vec<String>,
    body: Value,
}

/// A check service on 127.0.0.1: records every request and answers with `decide(path, body,
/// authorization)`.
struct CheckService {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CheckService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CheckService {
    async fn start(decide: fn(&str, &Value, &[String]) -> u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<Incoming>| {
                        let log = log.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let bytes = body.collect().await.map(|b| b.to_bytes());
                            let body: Value = bytes
                                .ok()
                                .and_then(|b| serde_json::from_slice(&b).ok())
                                .unwrap_or(Value::Null);
                            let authorization: Vec<String> = parts
                                .headers
                                .get_all("authorization")
                                .iter()
                                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                                .collect();
                            let path = parts.uri.path().to_owned();
                            let status = decide(&path, &body, &authorization);
                            log.lock().expect("log").push(Seen {
                                path,
                                content_type: parts
                                    .headers
                                    .get("content-type")
                                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
                                authorization,
                                body,
                            });
                            let mut res = hyper::Response::new(Full::new(Bytes::new()));
                            *res.status_mut() =
                                ::http::StatusCode::from_u16(status).expect("status");
                            Ok::<_, Infallible>(res)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("log").clone()
    }
}

/// Subscriptions: every event type must start with `allowed`; `broken` anywhere → 500; else 403.
/// Submissions: `authorization: Bearer good` → 200, anything else → 401.
fn decide(path: &str, body: &Value, authorization: &[String]) -> u16 {
    match path {
        "/subscriptions" => {
            let types: Vec<&str> = body["subscriptions"]
                .as_array()
                .map(|l| l.iter().filter_map(|s| s["eventType"].as_str()).collect())
                .unwrap_or_default();
            if types.iter().any(|t| t.starts_with("broken")) {
                500
            } else if types.iter().all(|t| t.starts_with("allowed")) {
                204
            } else {
                403
            }
        }
        "/submissions" if authorization == ["Bearer good"] => 200,
        "/submissions" => 401,
        _ => 404,
    }
}

// ---- tests ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_replaces_the_set_and_the_connection_is_told() {
    let dp = DataPlane::start(
        DataPlaneConfig::new()
            .expect("ports")
            .env("CORS", "https://app.example"),
    )
    .await
    .expect("dp");
    let (mut client, token, initial) =
        subscribe(dp.inbound(), Some(json!([{"eventType": "old"}])), None).await;
    assert_eq!(initial, json!([{"eventType": "old", "oneOf": []}]));

    // The preflight RIG answers for all three prefixes.
    let req = http::request(
        ::http::Method::OPTIONS,
        dp.inbound(),
        &format!("/_rig/v1/connection/longpolling/{token}/subscriptions"),
    )
    .body(Full::new(Bytes::new()))
    .expect("request");
    let (status, headers, _) = http::send(dp.inbound(), req).await.expect("OPTIONS");
    assert_eq!(status, 204);
    assert_eq!(headers["access-control-allow-methods"], "PUT");
    assert_eq!(
        headers["access-control-allow-headers"],
        "content-type,authorization"
    );
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );

    // The transport in the path does not matter (RIG's tests send SSE tokens to `ws`).
    let (status, answer) = put(
        dp.inbound(),
        &format!("/_rig/v1/connection/ws/{token}/subscriptions"),
        &[("accept", "application/json")],
        &subs_body(json!([{"eventType": "new", "oneOf": [{"name": "joe"}]}, {"eventType": "new", "oneOf": [{"name": "joe"}]}])),
    )
    .await;
    assert_eq!(status, 204, "{}", body_text(&answer));
    assert!(answer.2.is_empty());
    assert_eq!(
        answer.1["access-control-allow-origin"],
        "https://app.example"
    );

    let set = next_event(&mut client).await;
    assert_eq!(set.event, "rig.subscriptions_set");
    assert_eq!(
        set.json()["data"],
        json!([{"eventType": "new", "oneOf": [{"name": "joe"}]}]),
        "repeats are dropped"
    );
    assert!(set.id.is_some(), "the notice carries a resume token");

    // Old-type events no longer arrive; new ones do. Published in this order, the first event the
    // client sees must be the new one.
    for (event_type, id) in [("old", "o-1"), ("new", "n-1")] {
        let (status, body) = publish(
            dp.inbound(),
            ce(event_type, id, json!({"name": "joe"})),
            &[],
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    let event = next_event(&mut client).await;
    assert_eq!(event.event, "new");
    assert_eq!(event.json()["id"], "n-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_errors_follow_rigs_order_statuses_and_texts() {
    let dp = DataPlane::start(
        DataPlaneConfig::new()
            .expect("ports")
            .env("JWT_SECRET_KEY", SECRET)
            .env("RIG_MAX_BODY_BYTES", "4096"),
    )
    .await
    .expect("dp");
    let (_client, token, _) =
        subscribe(dp.inbound(), Some(json!([{"eventType": "a"}])), None).await;
    let path = subs_path(&token);
    let good = subs_body(json!([{"eventType": "b"}]));

    // (what, extra headers, body, expected status, expected text)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "accept without JSON",
            vec![("accept", "text/html")],
            good.clone(),
            406,
            "No supported media type",
        ),
        (
            "no content type",
            vec![("content-type", "")],
            good.clone(),
            400,
            "Expected JSON encoded body.",
        ),
        (
            "text content type",
            vec![("content-type", "text/plain")],
            good.clone(),
            400,
            "Expected JSON encoded body.",
        ),
        (
            "body not JSON",
            vec![],
            "{nope".to_owned(),
            400,
            "Expected JSON encoded body.",
        ),
        (
            "no subscriptions field",
            vec![],
            r#"{"subs":[]}"#.to_owned(),
            400,
            "Expected field \"subscriptions\" is not present.",
        ),
        (
            "subscriptions not a list",
            vec![],
            r#"{"subscriptions":{"eventType":"b"}}"#.to_owned(),
            400,
            "Expected field \"subscriptions\" to be a list",
        ),
        (
            "invalid JWT",
            vec![("authorization", "Bearer not.a.jwt")],
            good.clone(),
            400,
            "cannot accept subscription request: invalid authorization header: could not decode JWT",
        ),
        (
            "invalid subscription",
            vec![],
            subs_body(json!([{"eventType": ""}])),
            400,
            "cannot accept subscription request: could not parse given subscriptions: invalid subscription: event-type empty",
        ),
        (
            "too large",
            vec![],
            subs_body(json!([{"eventType": "x".repeat(5000)}])),
            413,
            "too large",
        ),
    ];
    for (what, headers, body, status, text) in cases {
        let (got, answer) = put(dp.inbound(), &path, &headers, &body).await;
        let body = body_text(&answer);
        assert_eq!(got, status, "{what}: {body}");
        assert!(
            body.contains(text),
            "{what}: {body:?} should contain {text:?}"
        );
    }

    // A token that is not one: 400. A token of a closed connection: 410.
    let (got, answer) = put(dp.inbound(), &subs_path("bm90LWEtdG9rZW4"), &[], &good).await;
    assert_eq!(
        (got, body_text(&answer).as_str()),
        (400, "Invalid connection token.")
    );

    let (client, closed, _) =
        subscribe(dp.inbound(), Some(json!([{"eventType": "c"}])), None).await;
    drop(client);
    let text = wait_until("the closed connection's PUT answers 410", T, || {
        let path = subs_path(&closed);
        let good = good.clone();
        let addr = dp.inbound();
        async move {
            // A write to the closed socket makes the server notice that the client is gone.
            publish(addr, ce("c", "c-1", json!({})), &[]).await;
            let (got, answer) = put(addr, &path, &[], &good).await;
            (got == 410).then(|| body_text(&answer))
        }
    })
    .await;
    assert_eq!(text, "Connection no longer exists.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_subscriptions_are_kept_only_when_the_put_carries_the_token() {
    let dp = DataPlane::start(
        DataPlaneConfig::new()
            .expect("ports")
            .env("JWT_SECRET_KEY", SECRET)
            .env("EXTRACTORS", EXTRACTORS),
    )
    .await
    .expect("dp");
    let alice = jwt(json!({"username": "alice", "jti": "s-1"}));
    let (mut client, token, initial) = subscribe(dp.inbound(), None, Some(&alice)).await;
    let automatic = json!({"eventType": "greeting", "oneOf": [{"name": "alice"}]});
    assert_eq!(initial, json!([automatic.clone()]));

    // With the token: the JWT's subscription first, then the body's.
    let bearer = format!("Bearer {alice}");
    let (status, answer) = put(
        dp.inbound(),
        &subs_path(&token),
        &[("authorization", &bearer)],
        &subs_body(json!([{"eventType": "other"}])),
    )
    .await;
    assert_eq!(status, 204, "{}", body_text(&answer));
    let set = next_event(&mut client).await;
    assert_eq!(
        set.json()["data"],
        json!([automatic, {"eventType": "other", "oneOf": []}])
    );
    publish(
        dp.inbound(),
        ce("greeting", "g-1", json!({"name": "alice"})),
        &[],
    )
    .await;
    assert_eq!(next_event(&mut client).await.json()["id"], "g-1");

    // Without it, RIG drops the automatic subscription.
    let (status, _) = put(
        dp.inbound(),
        &subs_path(&token),
        &[],
        &subs_body(json!([{"eventType": "other"}])),
    )
    .await;
    assert_eq!(status, 204);
    let set = next_event(&mut client).await;
    assert_eq!(
        set.json()["data"],
        json!([{"eventType": "other", "oneOf": []}])
    );
    publish(
        dp.inbound(),
        ce("greeting", "g-2", json!({"name": "alice"})),
        &[],
    )
    .await;
    publish(dp.inbound(), ce("other", "x-1", json!({})), &[]).await;
    assert_eq!(next_event(&mut client).await.json()["id"], "x-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_sent_to_another_process_is_handled_by_the_owner() {
    let a = DataPlaneConfig::new().expect("ports");
    let b = DataPlaneConfig::new().expect("ports");
    let peers = format!("rig-a=http://{},rig-b=http://{}", a.internal, b.internal);
    let common = |c: DataPlaneConfig, name: &str| {
        c.env("RIG_TOKEN_KEY", TOKEN_KEY)
            .env("POD_NAME", name)
            .env("RIG_PEERS", peers.clone())
    };
    let a = DataPlane::start(common(a, "rig-a")).await.expect("a");
    let b = DataPlane::start(common(b, "rig-b")).await.expect("b");
    // A third process that shares the key but knows no peers.
    let c = DataPlane::start(
        DataPlaneConfig::new()
            .expect("ports")
            .env("RIG_TOKEN_KEY", TOKEN_KEY)
            .env("POD_NAME", "rig-c"),
    )
    .await
    .expect("c");

    let (mut client, token, _) =
        subscribe(a.inbound(), Some(json!([{"eventType": "old"}])), None).await;

    // Sent to B, handled by A: the connection on A gets the new set.
    let (status, answer) = put(
        b.inbound(),
        &subs_path(&token),
        &[],
        &subs_body(json!([{"eventType": "new"}])),
    )
    .await;
    assert_eq!(status, 204, "{}", body_text(&answer));
    assert!(answer.1.contains_key("access-control-allow-origin"));
    let set = next_event(&mut client).await;
    assert_eq!(set.event, "rig.subscriptions_set");
    assert_eq!(
        set.json()["data"],
        json!([{"eventType": "new", "oneOf": []}])
    );
    publish(a.inbound(), ce("old", "o-1", json!({})), &[]).await;
    publish(a.inbound(), ce("new", "n-1", json!({})), &[]).await;
    assert_eq!(next_event(&mut client).await.json()["id"], "n-1");
    assert_eq!(
        http::metric(b.internal(), "rig_peer_forwards_total").await,
        1.0
    );
    assert_eq!(
        http::metric(a.internal(), "rig_peer_forwards_total").await,
        0.0
    );

    // The owner runs the checks; its answers come back unchanged.
    let (status, answer) = put(
        b.inbound(),
        &subs_path(&token),
        &[],
        &subs_body(json!([{"eventType": 1}])),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body_text(&answer)
            .starts_with("cannot accept subscription request: could not parse given subscriptions"),
        "{}",
        body_text(&answer)
    );

    // A process that does not know the owner: 410 with the reason.
    let (status, answer) = put(c.inbound(), &subs_path(&token), &[], &subs_body(json!([]))).await;
    assert_eq!(status, 410);
    assert!(
        body_text(&answer).contains("rig-a"),
        "{}",
        body_text(&answer)
    );

    // The owner is gone: B cannot reach it.
    drop(client);
    a.stop().await.expect("stop a");
    let (status, answer) = put(b.inbound(), &subs_path(&token), &[], &subs_body(json!([]))).await;
    assert_eq!(status, 503, "{}", body_text(&answer));
    assert!(http::metric(b.internal(), "rig_peer_forward_failures_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_checks_decide_subscriptions_and_submissions() {
    let service = CheckService::start(decide).await;
    let dp = DataPlane::start(
        DataPlaneConfig::new()
            .expect("ports")
            .env("JWT_SECRET_KEY", SECRET)
            .env("SUBSCRIPTION_CHECK", service.url("/subscriptions"))
            .env("SUBMISSION_CHECK", service.url("/submissions")),
    )
    .await
    .expect("dp");
    let bob = jwt(json!({"username": "bob"}));

    // Connect: the check sees the subscriptions as sent, the jwt as a bearer token.
    let (_client, token, _) = subscribe(
        dp.inbound(),
        Some(json!([{"eventType": "allowed.a"}])),
        Some(&bob),
    )
    .await;
    let seen = service.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].body,
        json!({"subscriptions": [{"eventType": "allowed.a"}]})
    );
    assert_eq!(
        seen[0].content_type.as_deref(),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(seen[0].authorization, vec![format!("Bearer {bob}")]);

    for (subs, what) in [
        ("denied.a", "a deny"),
        ("broken.a", "a broken check service"),
    ] {
        let (status, body) = refused(dp.inbound(), Some(json!([{"eventType": subs}])), None).await;
        assert_eq!(
            (status, body.as_str()),
            (400, "Subscription denied (not authorized)."),
            "{what}"
        );
    }
    assert_eq!(
        http::metric(
            dp.internal(),
            "rig_authorization_check_errors_total{check=\"subscription\"}"
        )
        .await,
        1.0
    );
    // Without subscriptions the check does not run (RIG).
    let before = service.seen().len();
    let _plain = subscribe(dp.inbound(), None, None).await;
    assert_eq!(service.seen().len(), before);

    // PUT: always checked, before the token is even looked at; 403.
    let (status, answer) = put(
        dp.inbound(),
        &subs_path("not-a-token"),
        &[],
        &subs_body(json!([{"eventType": "denied.b"}])),
    )
    .await;
    assert_eq!(
        (status, body_text(&answer).as_str()),
        (403, "Subscription denied.")
    );
    let body = subs_body(json!([{"eventType": "allowed.b"}]));
    let two_credentials = format!("Bearer {bob}, Basic eQ==");
    let (status, answer) = put(
        dp.inbound(),
        &subs_path(&token),
        &[
            ("content-type", "application/json; charset=utf-8"),
            ("authorization", &two_credentials),
        ],
        &body,
    )
    .await;
    assert_eq!(status, 204, "{}", body_text(&answer));
    let last = service.seen().pop().expect("the PUT was checked");
    assert_eq!(last.path, "/subscriptions");
    assert_eq!(
        last.body,
        serde_json::from_str::<Value>(&body).expect("json")
    );
    assert_eq!(
        last.content_type.as_deref(),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(last.authorization, vec![two_credentials.clone()]);

    // Submissions: the CloudEvent as JSON with the client's authorization.
    let event = ce("allowed.a", "e-1", json!({"n": 1}));
    let (status, body) = publish(
        dp.inbound(),
        event.clone(),
        &[("authorization", "Bearer good")],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let last = service.seen().pop().expect("the submission was checked");
    assert_eq!(last.path, "/submissions");
    assert_eq!(
        last.body,
        serde_json::from_str::<Value>(&event).expect("json")
    );
    let (status, body) = publish(
        dp.inbound(),
        event.clone(),
        &[("authorization", "Bearer bad")],
    )
    .await;
    assert_eq!((status, body.as_str()), (403, "Submission denied."));
    // The internal API's /v3/messages is not checked (RIG).
    let checked = service.seen().len();
    let (status, _, body) = http::post(
        dp.internal(),
        "/v3/messages",
        "application/cloudevents+json",
        event.clone(),
    )
    .await
    .expect("POST");
    assert_eq!(status, 202, "{body}");
    // RIG serves /v2 like /v3.
    let (status, _, body) = http::post(
        dp.internal(),
        "/v2/messages",
        "application/cloudevents+json",
        event,
    )
    .await
    .expect("POST");
    assert_eq!(status, 202, "{body}");
    assert_eq!(service.seen().len(), checked);
    assert_eq!(
        http::metric(
            dp.internal(),
            "rig_authorization_check_denials_total{check=\"submission\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_validation_needs_one_valid_token() {
    let dp = DataPlane::start(
        DataPlaneConfig::new()
            .expect("ports")
            .env("JWT_SECRET_KEY", SECRET)
            .env("SUBSCRIPTION_CHECK", "jwt_validation")
            .env("SUBMISSION_CHECK", "JWT_VALIDATION"),
    )
    .await
    .expect("dp");
    let token = jwt(json!({"username": "carol"}));
    let subs = json!([{"eventType": "a"}]);

    let (status, body) = refused(dp.inbound(), Some(subs.clone()), None).await;
    assert_eq!(
        (status, body.as_str()),
        (400, "Subscription denied (not authorized).")
    );
    let (_client, conn, _) = subscribe(dp.inbound(), Some(subs.clone()), Some(&token)).await;
    // No subscriptions: no check (RIG).
    let _anonymous = subscribe(dp.inbound(), None, None).await;

    let body = subs_body(subs);
    let (status, _) = put(dp.inbound(), &subs_path(&conn), &[], &body).await;
    assert_eq!(status, 403);
    let bearer = format!("Bearer {token}");
    let (status, answer) = put(
        dp.inbound(),
        &subs_path(&conn),
        &[("authorization", &bearer)],
        &body,
    )
    .await;
    assert_eq!(status, 204, "{}", body_text(&answer));

    let event = ce("a", "e-1", json!({}));
    let (status, body) = publish(dp.inbound(), event.clone(), &[]).await;
    assert_eq!((status, body.as_str()), (403, "Submission denied."));
    let (status, _) = publish(
        dp.inbound(),
        event.clone(),
        &[("authorization", "Bearer not.valid.jwt")],
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = publish(dp.inbound(), event.clone(), &[("authorization", &bearer)]).await;
    assert_eq!(status, 202, "{body}");
    // A bare token (no scheme) counts as a bearer token for the check (RIG).
    let (status, body) = publish(dp.inbound(), event, &[("authorization", &token)]).await;
    assert_eq!(status, 202, "{body}");
}
