//! RIG drop-in details the other tests do not pin, one assertion per line of the README's
//! compatibility table: the real binary, configured the RIG way (`EXTRACTORS` and
//! `PROXY_CONFIG_FILE` as file paths, `CORS`, `PROXY_RECV_TIMEOUT`), answering as RIG answers —
//! and, where we differ on purpose, answering as the table says.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rig_e2e::clients::{self, Poller};
use rig_e2e::dataplane::{self, DataPlane, DataPlaneConfig};
use rig_e2e::http::{self as client, form_encode};
use rig_e2e::sse::{self, Connect};
use rig_e2e::unique_name;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(30);
const CORS: &str = "https://app.example";
const SECRET: &str = "rig-compat-secret-0123456789";
const EXTRACTORS: &str = r#"{"greeting":{"name":{"stable_field_index":0,"event":{"json_pointer":"/data/name"},"jwt":{"json_pointer":"/username"}}}}"#;

fn jwt(claims: Value) -> String {
    rig_e2e::access::hs256(SECRET, claims)
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("rig-compat"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A backend answering 200 `backend` (no CORS headers of its own), and one that never answers.
async fn backends() -> (SocketAddr, SocketAddr) {
    let ok = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hang = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addrs = (
        ok.local_addr().expect("addr"),
        hang.local_addr().expect("addr"),
    );
    tokio::spawn(async move {
        while let Ok((stream, _)) = ok.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"backend"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hang.accept().await {
            held.push(stream);
        }
    });
    addrs
}

/// RIG definitions: `plain` to the answering backend, `slow` to the silent one, a `versioned`
/// API (RIG never routes those), and RIG targets this gateway does not serve.
fn apis(ok: SocketAddr, hang: SocketAddr) -> Value {
    let api = |id: &str, port: u16, endpoints: Value| {
        json!({"id": id, "name": id,
            "version_data": {"default": {"endpoints": endpoints}},
            "proxy": {"target_url": "127.0.0.1", "port": port}})
    };
    let mut versioned = api(
        "versioned",
        ok.port(),
        json!([{"id": "v", "method": "GET", "path_regex": "/versioned"}]),
    );
    versioned["versioned"] = true.into();
    json!([
        api(
            "plain",
            ok.port(),
            json!([{"id": "p", "method": "GET", "path_regex": "/plain"}])
        ),
        api(
            "slow",
            hang.port(),
            json!([{"id": "s", "method": "GET", "path_regex": "/slow"}])
        ),
        versioned,
        api(
            "streams",
            ok.port(),
            json!([
                {"id": "nats", "method": "POST", "path_regex": "/nats", "target": "nats", "topic": "t"},
                {"id": "kinesis", "method": "POST", "path_regex": "/kinesis", "target": "kinesis", "topic": "t"}
            ])
        ),
    ])
}

struct Rig {
    dp: DataPlane,
}

async fn start(extra: &[(&str, &str)]) -> Rig {
    let dir = temp_dir();
    let (ok, hang) = backends().await;
    let extractors = dir.join("extractors.json");
    std::fs::write(&extractors, EXTRACTORS).expect("write");
    let proxy = dir.join("proxy.json");
    std::fs::write(&proxy, apis(ok, hang).to_string()).expect("write");
    let mut config = DataPlaneConfig::new()
        .expect("ports")
        .env("CORS", CORS)
        .env("JWT_SECRET_KEY", SECRET)
        .env("EXTRACTORS", extractors.to_string_lossy())
        .env("PROXY_CONFIG_FILE", proxy.to_string_lossy())
        .env("PROXY_RECV_TIMEOUT", "300");
    for (k, v) in extra {
        config = config.env(k, *v);
    }
    Rig {
        dp: DataPlane::start(config).await.expect("start"),
    }
}

async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> client::Answer {
    let mut req = client::request(method, addr, path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client::send(
        addr,
        req.body(Full::new(Bytes::from(body.to_owned())))
            .expect("request"),
    )
    .await
    .expect("answer")
}

fn text(body: &Bytes) -> String {
    String::from_utf8_lossy(body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_endpoints_answer_as_rig_does() {
    let rig = start(&[]).await;
    let (inbound, internal) = (rig.dp.inbound(), rig.dp.internal());

    // SSE takes the JWT from the `jwt` query only (RIG #66): a valid bearer header derives no
    // subscription; the stream's CORS header is `$CORS`.
    let alice = jwt(json!({"username": "alice", "jti": "alice-1"}));
    let bearer = format!("Bearer {alice}");
    let (client, _, set) = sse::open_greeted(
        inbound,
        "/_rig/v1/connection/sse",
        &[("authorization", bearer.as_str())],
        T,
    )
    .await
    .expect("connect");
    assert_eq!(set, json!([]), "no JWT-derived subscription from a header");
    assert_eq!(
        client
            .headers
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap_or_default()),
        Some(CORS)
    );
    // With the `jwt` query, the extractor derives `name == alice` (EXTRACTORS read from a file).
    let (_, _, set) = sse::open_greeted(
        inbound,
        &format!("/_rig/v1/connection/sse?jwt={alice}"),
        &[],
        T,
    )
    .await
    .expect("connect");
    assert_eq!(
        set,
        json!([{"eventType": "greeting", "oneOf": [{"name": "alice"}]}])
    );

    // SSE refusals: RIG's texts, no CORS header.
    for (query, starts) in [
        (
            "subscriptions=%5Bbad",
            "Failed to decode subscription list: ",
        ),
        (
            &*format!("subscriptions={}", form_encode(r#"[{"eventType":""}]"#)),
            "could not parse subscriptions: ",
        ),
        (
            &*format!("subscriptions={}", form_encode(r#"{"eventType":"a"}"#)),
            "could not parse subscriptions: ",
        ),
    ] {
        match sse::connect(inbound, &format!("/_rig/v1/connection/sse?{query}"), &[])
            .await
            .expect("answer")
        {
            Connect::Refused(status, headers, body) => {
                assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
                assert!(body.starts_with(starts), "{query}: {body}");
                assert!(headers.get("access-control-allow-origin").is_none());
            }
            Connect::Stream(_) => panic!("{query} must be refused"),
        }
    }
    // Deliberately different: SSE is served on GET only; a POST there goes to the proxy.
    let (status, _, body) = call(inbound, Method::POST, "/_rig/v1/connection/sse", &[], "").await;
    assert_eq!(
        (status, text(&body)),
        (StatusCode::NOT_FOUND, r#"{"message":"Not Found"}"#.into())
    );

    // The events preflight.
    let (status, headers, body) = call(inbound, Method::OPTIONS, "/_rig/v1/events", &[], "").await;
    assert_eq!((status, body.len()), (StatusCode::NO_CONTENT, 0));
    assert_eq!(headers["access-control-allow-origin"], CORS);
    assert_eq!(headers["access-control-allow-methods"], "POST");
    assert_eq!(headers["access-control-allow-headers"], "content-type");

    // 202's body: the event as sent (RIG re-encoded it as a JSON string, §12.4).
    let event = r#"{"specversion":"0.2","type":"greeting","source":"s","id":"c-1"}"#;
    let (status, headers, body) = call(
        inbound,
        Method::POST,
        "/_rig/v1/events",
        &[("content-type", "application/cloudevents+json")],
        event,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("JSON"),
        serde_json::from_str::<Value>(event).expect("JSON")
    );
    assert_eq!(headers["access-control-allow-origin"], CORS);

    // HEAD /_rig/health (RIG's Plug.Head): 200, no body.
    let (status, _, body) = call(inbound, Method::HEAD, "/_rig/health", &[], "").await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));

    // WebSocket: a binary frame from the client closes like a text frame.
    let mut ws = clients::ws_subscribed(inbound, "").await;
    ws.send(Message::Binary(Bytes::from_static(b"x")))
        .await
        .expect("send");
    assert_eq!(
        clients::ws_close(&mut ws).await,
        (
            1000,
            "This WebSocket endpoint cannot be used for two-way communication.".to_owned()
        )
    );

    // The proxy: RIG definitions from a file; no CORS added to proxied answers;
    // PROXY_RECV_TIMEOUT (300 ms) bounds the silent backend with 504; `versioned` APIs are not
    // routed; NATS and Kinesis targets are not served (501).
    let (status, headers, body) = call(inbound, Method::GET, "/plain", &[], "").await;
    assert_eq!((status, text(&body)), (StatusCode::OK, "backend".into()));
    assert!(
        headers.get("access-control-allow-origin").is_none(),
        "{headers:?}"
    );
    let (status, _, _) = call(inbound, Method::GET, "/slow", &[], "").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let (status, _, _) = call(inbound, Method::GET, "/versioned", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for path in ["/nats", "/kinesis"] {
        let (status, _, body) = call(inbound, Method::POST, path, &[], "{}").await;
        assert_eq!(
            status,
            StatusCode::NOT_IMPLEMENTED,
            "{path}: {}",
            text(&body)
        );
    }

    // The internal API: unknown routes, the metrics' content type, /v2/responses as /v3.
    for (method, path) in [
        (Method::GET, "/v3/nothing"),
        (Method::GET, "/v1/apis"),
        (Method::PATCH, "/v3/apis/plain"),
    ] {
        let (status, headers, body) = call(internal, method.clone(), path, &[], "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(headers["content-type"], "application/json; charset=utf-8");
        assert_eq!(text(&body), r#"{"errors":{"detail":"Not found"}}"#);
    }
    let (status, headers, _) = call(internal, Method::GET, "/metrics", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    for path in ["/v3/responses", "/v2/responses"] {
        let (status, _, body) = call(internal, Method::POST, path, &[], "x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {}", text(&body));
        assert!(
            text(&body).contains("rig-correlation"),
            "{path}: {}",
            text(&body)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_api_and_revocation_answer_as_rig_does() {
    let rig = start(&[]).await;
    let (inbound, internal) = (rig.dp.inbound(), rig.dp.internal());
    let json_headers = [("content-type", "application/json")];

    // PUT /v3/apis/:id: the path's id wins over the body's.
    let mut plain = apis(
        "127.0.0.1:1".parse().expect("addr"),
        "127.0.0.1:1".parse().expect("addr"),
    )[0]
    .clone();
    plain["id"] = "other".into();
    plain["name"] = "renamed".into();
    let (status, _, body) = call(
        internal,
        Method::PUT,
        "/v3/apis/plain",
        &json_headers,
        &plain.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", text(&body));
    let (status, _, body) = call(internal, Method::GET, "/v3/apis/plain", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    let stored: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(
        (stored["id"].as_str(), stored["name"].as_str()),
        (Some("plain"), Some("renamed"))
    );
    let (status, _, _) = call(internal, Method::GET, "/v3/apis/other", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // `schema` needs a `target` (RIG's rule).
    let schema = json!({"id": "sch", "name": "sch",
        "version_data": {"default": {"endpoints": [
            {"id": "e", "method": "POST", "path_regex": "/sch", "schema": "subject"}]}},
        "proxy": {"target_url": "127.0.0.1", "port": 1}});
    let (status, _, body) = call(
        internal,
        Method::POST,
        "/v3/apis",
        &json_headers,
        &schema.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).expect("JSON"),
        json!({"sch/e": [{"target": "must be present"}]})
    );

    // `rig.session_killed` carries no data, as RIG sends it.
    let token = jwt(json!({"username": "bob", "jti": "bob-1"}));
    let (mut client, _, _) = sse::open_greeted(
        inbound,
        &format!("/_rig/v1/connection/sse?jwt={token}"),
        &[],
        T,
    )
    .await
    .expect("connect");
    let (status, _, body) = call(
        internal,
        Method::POST,
        "/v3/session-blacklist",
        &json_headers,
        r#"{"sessionId":"bob-1","validityInSeconds":60}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{}", text(&body));
    let seen = client
        .until(T, |e| e.event == "rig.session_killed")
        .await
        .expect("killed");
    let killed = seen.last().expect("the kill event").json();
    assert_eq!(killed["specversion"], "0.2");
    assert!(killed.get("data").is_none(), "{killed}");
}

/// Deliberately different: the process-wide `SUBSCRIPTION_CHECK` also guards long-polling
/// connects (RIG skipped it there, §12.3); an `EXTRACTORS` that cannot be read stops the process
/// (RIG logged and went on without it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_connects_are_checked_and_bad_extractors_stop_the_process() {
    let rig = start(&[("SUBSCRIPTION_CHECK", "jwt_validation")]).await;
    let subscriptions = form_encode(r#"[{"eventType":"greeting"}]"#);
    let mut denied = Poller::new(rig.dp.inbound(), &format!("subscriptions={subscriptions}"));
    let (status, body) = denied.get().await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "Subscription denied (not authorized)."
        )
    );
    let token = jwt(json!({"username": "carol", "jti": "carol-1"}));
    let mut allowed = Poller::new(
        rig.dp.inbound(),
        &format!("jwt={token}&subscriptions={subscriptions}"),
    );
    let (status, body) = allowed.get().await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "\"ok\""));

    let stderr = dataplane::refused(&[("EXTRACTORS", "/nonexistent/extractors.json")]).await;
    assert!(stderr.contains("EXTRACTORS"), "{stderr}");
    let stderr = dataplane::refused(&[("EXTRACTORS", "{not json")]).await;
    assert!(stderr.contains("EXTRACTORS"), "{stderr}");
}
