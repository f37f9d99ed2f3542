//! The reverse proxy with HTTP targets, end to end: the real `rig-dataplane` in front of real HTTP
//! backends started by the test on 127.0.0.1 (hyper), which echo what they received as JSON.
//!
//! Routing (first match, anchored and case-insensitive, 404, 405), rewrite with capture groups,
//! query strings passed through, header rules (host, forwarded, hop-by-hop, added headers,
//! traceparent), streaming both ways (an upload reaches the backend before it is complete; a
//! response chunk reaches the client before the backend finished), 413, 502, 504, JWT-secured
//! endpoints (401 with CORS, header, `x-` header and query tokens, revoked sessions),
//! `/v3/apis` CRUD with RIG's error maps, `ProxyRoute` manifests reloaded live, and the metrics.
//! Upstream protocols: `https://` backends (a private CA made with `openssl`, `PROXY_TLS_CA_FILE`)
//! over h2 on one multiplexed connection or over HTTP/1.1, untrusted ones (502), h2c backends
//! with `http2: true`, and a stalled upload (408, the backend sees the request aborted).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rig_e2e::dataplane::{self, DataPlane, DataPlaneConfig};
use rig_e2e::{http as client, unique_name, wait_until};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

const T: Duration = Duration::from_secs(30);
const SECRET: &str = "proxy-e2e-secret";
const CORS: &str = "https://app.example";
const MIB: usize = 1024 * 1024;
/// The data plane's `PROXY_MAX_BODY_BYTES` in these tests: the 20 MiB upload fits.
const LIMIT: usize = 21 * MIB;

// ---- backends ----

/// An HTTP backend that echoes requests as JSON.
struct Backend {
    addr: SocketAddr,
    /// Request-body bytes received so far (all requests).
    received: Arc<AtomicU64>,
    /// Requests received so far.
    requests: Arc<AtomicU64>,
    /// Lets `/stream` send its second chunk.
    release: Arc<Notify>,
}

struct Ctx {
    name: String,
    received: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    release: Arc<Notify>,
}

type BackendBody = UnsyncBoxBody<Bytes, Infallible>;

async fn backend(name: &str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let release = Arc::new(Notify::new());
    let ctx = Arc::new(Ctx {
        name: name.to_owned(),
        received: received.clone(),
        requests: requests.clone(),
        release: release.clone(),
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| echo(ctx.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Backend {
        addr,
        received,
        requests,
        release,
    }
}

async fn echo(ctx: Arc<Ctx>, req: Request<Incoming>) -> Result<Response<BackendBody>, Infallible> {
    ctx.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_owned();
    if path.starts_with("/hang") {
        // A backend that accepted the request and never answers.
        std::future::pending::<()>().await;
    }
    if path == "/stream" {
        let release = ctx.release.clone();
        let chunks = futures::stream::unfold(0u8, move |step| {
            let release = release.clone();
            async move {
                match step {
                    0 => Some((Ok(Frame::data(Bytes::from_static(b"first\n"))), 1)),
                    1 => {
                        release.notified().await;
                        Some((Ok(Frame::data(Bytes::from_static(b"second\n"))), 2))
                    }
                    _ => None,
                }
            }
        });
        return Ok(Response::new(UnsyncBoxBody::new(StreamBody::new(chunks))));
    }
    let method = req.method().to_string();
    let query = req.uri().query().map(str::to_owned);
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match headers.get_mut(k.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(k.as_str().to_owned(), v.into());
            }
        }
    }
    let mut body = req.into_body();
    let mut len = 0usize;
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            len += data.len();
            ctx.received.fetch_add(data.len() as u64, Ordering::Relaxed);
            if kept.len() < 64 * 1024 {
                kept.extend_from_slice(&data);
            }
        }
    }
    let answer = json!({
        "backend": ctx.name, "method": method, "path": path, "query": query,
        "headers": headers, "body_len": len, "body": String::from_utf8_lossy(&kept),
    });
    let mut res = Response::new(UnsyncBoxBody::new(Full::new(Bytes::from(
        answer.to_string(),
    ))));
    let h = res.headers_mut();
    h.insert("content-type", "application/json".parse().expect("value"));
    h.insert("x-backend", ctx.name.parse().expect("value"));
    h.insert("connection", "x-upstream-private".parse().expect("value"));
    h.insert("x-upstream-private", "secret".parse().expect("value"));
    h.insert("keep-alive", "timeout=5".parse().expect("value"));
    *res.status_mut() = if path.starts_with("/status/201") {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(res)
}

// ---- set-up ----

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("rig-proxy"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The main routes: `e2e/a-echo` (several endpoints), `e2e/b-second` (shadowed by a-echo for
/// `/first/...`), `e2e/c-hang` (300 ms timeout), `e2e/c-hang-slow` (20 s timeout), `e2e/d-closed` (nothing listens), `e2e/e-xauth`
/// (JWT in `x-token`), `e2e/f-kafka` (a Kafka target; no broker here: 503).
fn manifests(one: SocketAddr, two: SocketAddr, closed: SocketAddr) -> String {
    format!(
        r#"apiVersion: rig.dev/v1alpha1
kind: ProxyRoute
metadata: {{name: a-echo, namespace: e2e}}
spec:
  endpoints:
    - {{id: first, method: GET, pathRegex: '/first/.*'}}
    - {{id: chapters, method: GET, pathRegex: '/books/([^/]+)/chapters/(\d+)', pathReplacement: '/v2/\2/of/\1'}}
    - {{id: echo, method: POST, pathRegex: '/echo(/.*)?'}}
    - {{id: upload, method: PUT, pathRegex: '/upload'}}
    - {{id: stream, method: GET, pathRegex: '/stream'}}
    - {{id: status, method: POST, pathRegex: '/status/.*'}}
    - {{id: secure, method: GET, pathRegex: '/secure/.*', secured: true}}
  target: {{kind: Http, url: 'http://{one}'}}
  auth: {{header: Authorization, queryParameter: token}}
  addRequestHeaders: {{x-gateway: rig, x-replaced: by-route}}
---
apiVersion: rig.dev/v1alpha1
kind: ProxyRoute
metadata: {{name: b-second, namespace: e2e}}
spec:
  endpoints:
    - {{id: shadowed, method: GET, pathRegex: '/first/second'}}
    - {{id: second, method: GET, pathRegex: '/second/.*'}}
  target: {{kind: Http, url: 'http://{two}'}}
---
apiVersion: rig.dev/v1alpha1
kind: ProxyRoute
metadata: {{name: c-hang, namespace: e2e}}
spec:
  endpoints: [{{id: hang, method: GET, pathRegex: '/hang'}}]
  target: {{kind: Http, url: 'http://{one}'}}
  response: {{timeout: 300ms}}
---
apiVersion: rig.dev/v1alpha1
kind: ProxyRoute
metadata: {{name: c-hang-slow, namespace: e2e}}
spec:
  endpoints: [{{id: hang-slow, method: GET, pathRegex: '/hang-slow'}}]
  target: {{kind: Http, url: 'http://{one}'}}
  response: {{timeout: 20s}}
---
apiVersion: rig.dev/v1alpha1
kind: ProxyRoute
metadata: {{name: d-closed, namespace: e2e}}
spec:
  endpoints: [{{id: closed, method: GET, pathRegex: '/closed'}}]
  target: {{kind: Http, url: 'http://{closed}'}}
---
apiVersion: rig.dev/v1alpha1
kind: ProxyRoute
metadata: {{name: e-xauth, namespace: e2e}}
spec:
  endpoints: [{{id: x, method: GET, pathRegex: '/xauth', secured: true}}]
  target: {{kind: Http, url: 'http://{one}'}}
  auth: {{header: X-Token}}
---
apiVersion: rig.dev/v1alpha1
kind: ProxyRoute
metadata: {{name: f-kafka, namespace: e2e}}
spec:
  endpoints: [{{id: order, method: POST, pathRegex: '/orders'}}]
  target: {{kind: Kafka, topic: orders}}
"#
    )
}

/// RIG's definitions: `use_env` target, a non-standard method (405), a rewrite.
fn rig_config(port: u16) -> String {
    json!([{
        "id": "rig-api", "name": "rig-api",
        "version_data": {"default": {"endpoints": [
            {"id": "purge", "method": "purge", "path_regex": "/purge"},
            {"id": "legacy", "method": "get", "path_regex": "/legacy/(.*)", "path_replacement": "/new/\\1"}
        ]}},
        "proxy": {"use_env": true, "target_url": "BACKEND_HOST", "port": port}
    }])
    .to_string()
}

struct Setup {
    dp: DataPlane,
    one: Backend,
    two: Backend,
    dir: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn setup() -> Setup {
    let one = backend("one").await;
    let two = backend("two").await;
    let closed = dataplane::free_addr().expect("port");
    let dir = temp_dir();
    std::fs::write(
        dir.join("routes.yaml"),
        manifests(one.addr, two.addr, closed),
    )
    .expect("write");
    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("RIG_MANIFESTS", dir.to_string_lossy())
        .env("PROXY_CONFIG_FILE", rig_config(one.addr.port()))
        .env("BACKEND_HOST", "127.0.0.1")
        .env("HOST", "127.0.0.1")
        .env("JWT_SECRET_KEY", SECRET)
        .env("CORS", CORS)
        .env("PROXY_MAX_BODY_BYTES", LIMIT.to_string());
    let dp = DataPlane::start(config).await.expect("data plane");
    Setup { dp, one, two, dir }
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

/// Send `method path` with `headers` and `body` to the inbound port.
async fn call(
    dp: &DataPlane,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut req = client::request(method, dp.inbound(), path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client::send(
        dp.inbound(),
        req.body(Full::new(body.into())).expect("request"),
    )
    .await
    .expect("inbound request")
}

/// GET through the proxy; the backend's echo as JSON (asserting 200).
async fn echoed(dp: &DataPlane, path: &str, headers: &[(&str, &str)]) -> Value {
    let (status, _, body) = call(dp, Method::GET, path, headers, Bytes::new()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).expect("echo JSON")
}

async fn internal(
    dp: &DataPlane,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Bytes) {
    let mut req = client::request(method, dp.internal(), path);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let (status, _, body) = client::send(dp.internal(), req.body(Full::new(body)).expect("req"))
        .await
        .expect("internal request");
    (status, body)
}

fn as_json(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into()))
}

// ---- tests ----

#[tokio::test]
async fn routing_first_match_rewrite_query_404_and_405() {
    let s = setup().await;
    // First match wins: a-echo's `/first/.*` comes before b-second's `/first/second`.
    let e = echoed(&s.dp, "/first/second", &[]).await;
    assert_eq!(e["backend"], "one");
    assert_eq!(e["path"], "/first/second");
    assert_eq!(echoed(&s.dp, "/second/x", &[]).await["backend"], "two");
    // Anchored and case-insensitive; capture groups in the rewrite; query passed through as is.
    let e = echoed(
        &s.dp,
        "/BOOKS/moby-dick/Chapters/12?a[b]=c&a[d][]=1&x=%20y&flag",
        &[],
    )
    .await;
    assert_eq!(e["path"], "/v2/12/of/moby-dick");
    assert_eq!(e["query"], "a[b]=c&a[d][]=1&x=%20y&flag");
    // RIG definitions from PROXY_CONFIG_FILE (use_env target) come after the manifests.
    let e = echoed(&s.dp, "/legacy/a/b?q=1", &[]).await;
    assert_eq!(e["path"], "/new/a/b");
    assert_eq!(e["query"], "q=1");
    // No match: wrong path, prefix only (anchored), wrong method, unmatched /_rig path.
    for (method, path) in [
        (Method::GET, "/nothing"),
        (Method::GET, "/x/first/y"),
        (Method::DELETE, "/first/y"),
        (Method::GET, "/_rig/v1/unknown"),
    ] {
        let (status, _, body) = call(&s.dp, method.clone(), path, &[], Bytes::new()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(as_json(&body), json!({"message": "Not Found"}));
    }
    // A matched endpoint with a method the gateway does not proxy: RIG's 405.
    let purge = Method::from_bytes(b"PURGE").expect("method");
    let (status, _, body) = call(&s.dp, purge, "/purge", &[], Bytes::new()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body, "Method not allowed.");
    // The backend's status passes through; a Kafka target without KAFKA_BROKERS says so.
    let (status, _, _) = call(&s.dp, Method::POST, "/status/201", &[], "x").await;
    assert_eq!(status, StatusCode::CREATED);
    let event = r#"{"specversion":"1.0","type":"order","source":"s","id":"1"}"#;
    let (status, _, body) = call(&s.dp, Method::POST, "/orders", &[], event).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("KAFKA_BROKERS"));
    // A body RIG refuses is its 400 first, broker or not.
    let (status, _, _) = call(&s.dp, Method::POST, "/orders", &[], "{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn request_and_response_headers_are_rewritten() {
    let s = setup().await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, headers, body) = call(
        &s.dp,
        Method::GET,
        "/first/headers",
        &[
            ("connection", "keep-alive, x-drop-me"),
            ("x-drop-me", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("forwarded", "for=203.0.113.9"),
            ("x-replaced", "by-client"),
            ("x-client", "kept"),
            ("traceparent", parent),
            ("tracestate", "vendor=1"),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let e: Value = serde_json::from_slice(&body).expect("json");
    let h = &e["headers"];
    assert_eq!(h["host"], s.one.addr.to_string());
    assert_eq!(h["forwarded"], "for=127.0.0.1;by=127.0.0.1");
    assert_eq!(h["x-gateway"], "rig");
    assert_eq!(h["x-replaced"], "by-route");
    assert_eq!(h["x-client"], "kept");
    assert_eq!(h["traceparent"], parent);
    assert_eq!(h["tracestate"], "vendor=1");
    for dropped in [
        "x-drop-me",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ] {
        assert!(
            h.get(dropped).is_none(),
            "{dropped} reached the backend: {h}"
        );
    }
    // Response: the backend's headers minus hop-by-hop ones (and those its `connection` names).
    assert_eq!(headers["x-backend"], "one");
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.get("x-upstream-private").is_none(), "{headers:?}");
    assert!(headers.get("keep-alive").is_none(), "{headers:?}");
    // Without a traceparent the gateway starts a trace.
    let e = echoed(&s.dp, "/first/trace", &[]).await;
    let generated = e["headers"]["traceparent"].as_str().expect("traceparent");
    let parts: Vec<&str> = generated.split('-').collect();
    assert_eq!(parts.len(), 4, "{generated}");
    assert_eq!((parts[0], parts[1].len(), parts[2].len()), ("00", 32, 16));
    assert_ne!(parts[1], "0".repeat(32));
}

#[tokio::test]
async fn multipart_upload_passes_verbatim() {
    let s = setup().await;
    let boundary = "----rig-e2e-boundary";
    let body = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"title\"\r\n\r\nMoby Dick\r\n\
         --{boundary}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\
         content-type: application/octet-stream\r\n\r\n\x01\x02binary\r\n--{boundary}--\r\n"
    );
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let (status, _, answer) = call(
        &s.dp,
        Method::POST,
        "/echo/upload",
        &[("content-type", &content_type)],
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let e: Value = serde_json::from_slice(&answer).expect("json");
    assert_eq!(e["method"], "POST");
    assert_eq!(e["headers"]["content-type"], content_type);
    assert_eq!(e["body"], body);
    assert_eq!(e["body_len"], body.len());
}

/// A request whose body the test feeds through a channel (chunked, no content-length).
async fn streaming_request(
    addr: SocketAddr,
    path: &str,
) -> (
    mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<hyper::Result<Response<Incoming>>>,
) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let chunks = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = client::request(Method::PUT, addr, path)
        .body(StreamBody::new(chunks))
        .expect("request");
    (
        tx,
        tokio::spawn(async move { sender.send_request(req).await }),
    )
}

#[tokio::test]
async fn uploads_and_downloads_are_streamed_not_buffered() {
    let s = setup().await;
    // Upload: the backend gets the first MiB while the client still holds the rest back. A
    // gateway that buffered the body would forward nothing until the end.
    let (tx, response) = streaming_request(s.dp.inbound(), "/upload").await;
    tx.send(Bytes::from(vec![b'a'; MIB])).await.expect("chunk");
    wait_until("the backend receives the upload's start", T, || async {
        (s.one.received.load(Ordering::Relaxed) > 0).then_some(())
    })
    .await;
    for _ in 1..20 {
        tx.send(Bytes::from(vec![b'b'; MIB])).await.expect("chunk");
    }
    drop(tx);
    let res = response.await.expect("task").expect("response");
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.expect("body").to_bytes();
    let e: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(e["body_len"], 20 * MIB);
    assert_eq!(s.one.received.load(Ordering::Relaxed), (20 * MIB) as u64);

    // Download: the client reads the first chunk before the backend sends the second.
    let stream = TcpStream::connect(s.dp.inbound()).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = client::request(Method::GET, s.dp.inbound(), "/stream")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let res = sender.send_request(req).await.expect("response");
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let first = tokio::time::timeout(T, body.frame())
        .await
        .expect("the first chunk arrives before the backend finished")
        .expect("a frame")
        .expect("no error");
    assert_eq!(first.into_data().expect("data"), "first\n");
    s.one.release.notify_one();
    let rest = body.collect().await.expect("rest").to_bytes();
    assert_eq!(rest, "second\n");
}

#[tokio::test]
async fn too_large_bodies_get_413() {
    let s = setup().await;
    // Declared too large: refused before the backend is contacted.
    let mut tcp = TcpStream::connect(s.dp.inbound()).await.expect("connect");
    let head = format!(
        "PUT /upload HTTP/1.1\r\nhost: rig\r\ncontent-length: {}\r\n\r\n",
        LIMIT + 1
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(T, tcp.read(&mut answer))
        .await
        .expect("an answer")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(s.one.received.load(Ordering::Relaxed), 0);

    // Streamed (chunked) past the limit: cut off with 413 once the limit is crossed.
    let (tx, response) = streaming_request(s.dp.inbound(), "/upload").await;
    for _ in 0..(LIMIT / MIB) {
        tx.send(Bytes::from(vec![b'c'; MIB])).await.expect("chunk");
    }
    tx.send(Bytes::from(vec![b'c'; MIB])).await.expect("chunk");
    // The body stays open: the gateway must answer on its own.
    let res = tokio::time::timeout(T, response)
        .await
        .expect("answered while the upload is still open")
        .expect("task")
        .expect("response");
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    drop(tx);
}

#[tokio::test]
async fn unreachable_and_silent_backends_get_502_and_504() {
    let s = setup().await;
    let (status, _, body) = call(&s.dp, Method::GET, "/closed", &[], Bytes::new()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body, "Bad gateway.");
    let (status, _, _) = call(&s.dp, Method::GET, "/hang", &[], Bytes::new()).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    // The outcomes are counted by endpoint regex, not by request path.
    let (_, text) = client::get(s.dp.internal(), "/metrics")
        .await
        .expect("metrics");
    for line in [
        r#"rig_proxy_requests_total{method="GET",path="/closed",target="http",response_from="http",status="unreachable"} 1"#,
        r#"rig_proxy_requests_total{method="GET",path="/hang",target="http",response_from="http",status="response_timeout"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing in:\n{text}"
        );
    }
}

/// `response.timeout` is the route's: of two requests to a backend that never answers, the one
/// sent first (20 s route) is still waiting when the one sent second (300 ms route) has its 504.
/// With the default (5 s) on both, the first would answer first. An order, not a duration.
#[tokio::test]
async fn each_route_waits_its_own_response_timeout() {
    let s = setup().await;
    let slow = call(&s.dp, Method::GET, "/hang-slow", &[], Bytes::new());
    let fast = call(&s.dp, Method::GET, "/hang", &[], Bytes::new());
    tokio::pin!(slow);
    tokio::select! {
        biased;
        (status, _, _) = &mut slow => panic!("the 20 s route answered ({status}) before the 300 ms one"),
        (status, _, _) = fast => assert_eq!(status, StatusCode::GATEWAY_TIMEOUT),
    }
}

#[tokio::test]
async fn secured_endpoints_need_a_valid_jwt() {
    let s = setup().await;
    let valid = token("session-ok");
    for headers in [
        vec![],
        vec![("authorization", "Bearer not-a-jwt")],
        vec![("authorization", valid.as_str())], // no "Bearer "
    ] {
        let (status, h, body) = call(&s.dp, Method::GET, "/secure/x", &headers, Bytes::new()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(body, "Authentication failed.");
        assert_eq!(h["access-control-allow-origin"], CORS);
        assert_eq!(h["access-control-allow-methods"], "*");
        assert_eq!(h["access-control-allow-headers"], "content-type");
    }
    assert_eq!(s.one.received.load(Ordering::Relaxed), 0);
    assert_eq!(
        s.one.requests.load(Ordering::Relaxed),
        0,
        "no refused request was forwarded"
    );
    let bearer = format!("Bearer {valid}");
    let e = echoed(&s.dp, "/secure/x", &[("authorization", &bearer)]).await;
    assert_eq!(
        e["headers"]["authorization"], bearer,
        "the token is forwarded"
    );
    echoed(&s.dp, &format!("/secure/q?token=bad,{valid}"), &[]).await;
    // An `x-` header carries the raw token; Authorization does not count there.
    echoed(&s.dp, "/xauth", &[("x-token", &valid)]).await;
    let (status, _, _) = call(
        &s.dp,
        Method::GET,
        "/xauth",
        &[("authorization", &bearer)],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A revoked session is refused at once.
    let revoked = token("session-revoked");
    echoed(&s.dp, "/xauth", &[("x-token", &revoked)]).await;
    let (status, body) = internal(
        &s.dp,
        Method::POST,
        "/v3/session-blacklist",
        Some(json!({"sessionId": "session-revoked", "validityInSeconds": 60})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body:?}");
    let (status, _, _) = call(
        &s.dp,
        Method::GET,
        "/xauth",
        &[("x-token", &revoked)],
        Bytes::new(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn apis_crud_with_rigs_statuses_and_error_maps() {
    let s = setup().await;
    let (status, body) = internal(&s.dp, Method::GET, "/v3/apis", None).await;
    assert_eq!(status, StatusCode::OK);
    let list = as_json(&body);
    let ids: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "e2e/a-echo",
            "e2e/b-second",
            "e2e/c-hang",
            "e2e/c-hang-slow",
            "e2e/d-closed",
            "e2e/e-xauth",
            "e2e/f-kafka",
            "rig-api"
        ]
    );
    assert_eq!(list[0]["managed_by"], "ProxyRoute");
    // RIG serves /v2 like /v3.
    let (status, v2) = internal(&s.dp, Method::GET, "/v2/apis", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(as_json(&v2), list);
    let (status, one) = internal(&s.dp, Method::GET, "/v2/apis/rig-api", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(as_json(&one)["id"], "rig-api");

    // Validation: RIG's keys and messages.
    let (status, body) = internal(
        &s.dp,
        Method::POST,
        "/v3/apis",
        Some(
            json!({"id": "bad", "version_data": {"default": {"endpoints": [
            {"id": "e1", "method": "GET", "secured": true},
        ]}}, "proxy": {"target_url": "127.0.0.1", "port": "80"}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        as_json(&body),
        json!({
            "api": [{"name": "must be string"}, {"name": "must have a length of at least 1"}, {"port": "must be integer"}],
            "bad/e1": [{"path_regex": "must be string"}, {"path_regex": "must have a length of at least 1"}, {"auth_type": "must be one of [\"jwt\"]"}],
        })
    );
    // Validated as sent, before defaults (RIG's `auth_type: jwt` default header must not hide a
    // missing `header_name`), with every problem at once.
    let (status, body) = internal(
        &s.dp,
        Method::POST,
        "/v3/apis",
        Some(
            json!({"id": "invalid-config", "name": "n", "auth_type": "jwt",
            "auth": {"use_header": true},
            "version_data": {"default": {"endpoints": [
                {"id": "e1", "method": "GET", "path_regex": "/ic"}]}},
            "proxy": {"target_url": "127.0.0.1", "port": 80}}),
        ),
    )
    .await;
    assert_eq!(
        (status, as_json(&body)),
        (
            StatusCode::BAD_REQUEST,
            json!({"invalid-config": [{"header_name": "must be present"}]})
        )
    );
    let (status, body) = internal(
        &s.dp,
        Method::POST,
        "/v3/apis",
        Some(json!({"id": "empty-proxy", "name": "n", "auth_type": "jwt",
            "auth": {"use_query": true},
            "version_data": {"default": {"endpoints": [{"id": "e1", "method": "GET"}]}},
            "proxy": {}})),
    )
    .await;
    assert_eq!(
        (status, as_json(&body)),
        (
            StatusCode::BAD_REQUEST,
            json!({
                "empty-proxy": [{"query_name": "must be present"}],
                "api": [
                    {"proxy": "must be present"},
                    {"target_url": "must be string"},
                    {"target_url": "must have a length of at least 1"},
                    {"port": "must be integer"}
                ],
                "empty-proxy/e1": [
                    {"path_regex": "must be string"},
                    {"path_regex": "must have a length of at least 1"}
                ],
            })
        )
    );
    let (status, _) = internal(&s.dp, Method::GET, "/v3/apis/invalid-config", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");

    let port = s.two.addr.port();
    let def = |replacement: &str| {
        json!({"id": "dyn", "name": "dyn",
            "version_data": {"default": {"endpoints": [
                {"id": "e", "method": "GET", "path_regex": "/dyn/(.*)", "path_replacement": replacement},
            ]}},
            "proxy": {"target_url": "127.0.0.1", "port": port}})
    };
    let (status, body) = internal(&s.dp, Method::POST, "/v3/apis", Some(def("/one/\\1"))).await;
    assert_eq!(
        (status, as_json(&body)),
        (StatusCode::CREATED, json!({"message": "ok"}))
    );
    let e = echoed(&s.dp, "/dyn/x", &[]).await;
    assert_eq!(
        (e["backend"].as_str(), e["path"].as_str()),
        (Some("two"), Some("/one/x"))
    );
    let (status, body) = internal(&s.dp, Method::POST, "/v3/apis", Some(def("/one/\\1"))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        as_json(&body),
        json!({"message": "API with id=dyn already exists."})
    );
    let (status, body) = internal(&s.dp, Method::GET, "/v3/apis/dyn", None).await;
    assert_eq!(status, StatusCode::OK);
    let got = as_json(&body);
    assert_eq!(
        (got["active"].clone(), got["ref_number"].clone()),
        (json!(true), json!(0))
    );

    // Update: merged, ref_number + 1, routing follows at once.
    let (status, _) = internal(&s.dp, Method::PUT, "/v3/apis/dyn", Some(def("/two/\\1"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echoed(&s.dp, "/dyn/y", &[]).await["path"], "/two/y");
    let (status, body) = internal(&s.dp, Method::PUT, "/v3/apis/missing", Some(def("/x"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        as_json(&body),
        json!({"message": "API with id=missing doesn't exists."})
    );
    let (status, _) = internal(&s.dp, Method::PUT, "/v3/apis/dyn", Some(json!({"name": 1}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Soft delete: gone from routing and the API; a second delete is 404; re-create re-activates.
    let (status, body) = internal(&s.dp, Method::DELETE, "/v3/apis/dyn", None).await;
    assert_eq!((status, body.len()), (StatusCode::NO_CONTENT, 0));
    let (status, _, _) = call(&s.dp, Method::GET, "/dyn/x", &[], Bytes::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = internal(&s.dp, Method::GET, "/v3/apis/dyn", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = internal(&s.dp, Method::DELETE, "/v3/apis/dyn", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = internal(&s.dp, Method::POST, "/v3/apis", Some(def("/three/\\1"))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, body) = internal(&s.dp, Method::GET, "/v3/apis/dyn", None).await;
    assert_eq!(as_json(&body)["ref_number"], 3);
    assert_eq!(echoed(&s.dp, "/dyn/z", &[]).await["path"], "/three/z");

    // Routes from manifests are read-only here.
    for (method, body) in [(Method::DELETE, None), (Method::PUT, Some(def("/x")))] {
        let (status, text) = internal(&s.dp, method.clone(), "/v3/apis/e2e/a-echo", body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{method}");
        assert!(
            String::from_utf8_lossy(&text).contains("ProxyRoute"),
            "{text:?}"
        );
    }
    let (status, _) = internal(&s.dp, Method::GET, "/v3/apis/e2e/a-echo", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn proxy_route_manifests_are_reloaded_live() {
    let one = backend("one").await;
    let dir = temp_dir();
    std::fs::write(dir.join("empty.yaml"), "").expect("write");
    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("RIG_MANIFESTS", dir.to_string_lossy());
    let dp = DataPlane::start(config).await.expect("data plane");
    let (status, _, _) = call(&dp, Method::GET, "/live/x", &[], Bytes::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let route = format!(
        "apiVersion: rig.dev/v1alpha1\nkind: ProxyRoute\nmetadata: {{name: live}}\nspec:\n  endpoints: [{{id: l, method: GET, pathRegex: '/live/(.*)', pathReplacement: '/\\1'}}]\n  target: {{kind: Http, url: 'http://{}'}}\n",
        one.addr
    );
    std::fs::write(dir.join("live.yaml"), route).expect("write");
    let e = wait_until("the new route answers", T, || async {
        let (status, _, body) = call(&dp, Method::GET, "/live/x", &[], Bytes::new()).await;
        (status == StatusCode::OK).then(|| as_json(&body))
    })
    .await;
    assert_eq!(e["path"], "/x");
    // A keep-alive connection opened now sees later route changes too.
    let mut kept = keep_alive(&dp).await;
    assert_eq!(get_on(&mut kept, "/live/x").await, StatusCode::OK);
    // An invalid change is rejected whole: the route keeps answering.
    std::fs::write(
        dir.join("live.yaml"),
        "apiVersion: rig.dev/v1alpha1\nkind: ProxyRoute\nmetadata: {name: live}\nspec:\n  endpoints: [{id: l, method: GET, pathRegex: '/live/(.*'}]\n  target: {kind: Http, url: 'http://127.0.0.1:9'}\n",
    )
    .expect("write");
    wait_until("the bad change is rejected", T, || async {
        let (_, text) = client::get(dp.internal(), "/metrics").await.ok()?;
        text.lines()
            .any(|l| l == "rig_config_reload_failures_total 1")
            .then_some(())
    })
    .await;
    let (status, _, _) = call(&dp, Method::GET, "/live/x", &[], Bytes::new()).await;
    assert_eq!(status, StatusCode::OK);
    std::fs::remove_file(dir.join("live.yaml")).expect("remove");
    wait_until("the removed route is gone", T, || async {
        let (status, _, _) = call(&dp, Method::GET, "/live/x", &[], Bytes::new()).await;
        (status == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    assert_eq!(get_on(&mut kept, "/live/x").await, StatusCode::NOT_FOUND);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One HTTP/1.1 keep-alive connection to the data plane's inbound port.
async fn keep_alive(dp: &DataPlane) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(dp.inbound()).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

/// `GET path` on a kept connection; the status (the body is read).
async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
) -> StatusCode {
    let req = Request::get(path)
        .header("host", "gateway")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let res = sender.send_request(req).await.expect("answer");
    let status = res.status();
    res.into_body().collect().await.expect("body");
    status
}

/// Write `bytes` on a new connection to the inbound port and read until the data plane closes it.
async fn raw_exchange(dp: &DataPlane, bytes: &[u8]) -> String {
    let mut raw = TcpStream::connect(dp.inbound()).await.expect("connect");
    raw.write_all(bytes).await.expect("write");
    let mut all = Vec::new();
    tokio::time::timeout(T, raw.read_to_end(&mut all))
        .await
        .expect("the data plane ends the connection")
        .expect("read");
    String::from_utf8_lossy(&all).into_owned()
}

#[test]
fn an_invalid_proxy_config_file_stops_the_process_with_rigs_error_map() {
    let out = std::process::Command::new(dataplane::binary().expect("binary"))
        .env("RIG_BIND_ADDRESS", "127.0.0.1")
        .env(
            "INBOUND_PORT",
            dataplane::free_addr().expect("port").port().to_string(),
        )
        .env(
            "API_HTTP_PORT",
            dataplane::free_addr().expect("port").port().to_string(),
        )
        .env(
            "PROXY_CONFIG_FILE",
            r#"[{"id":"svc","version_data":{"default":{"endpoints":[]}},"proxy":{"target_url":"h","port":1}}]"#,
        )
        .output()
        .expect("runs");
    assert!(!out.status.success(), "must refuse to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PROXY_CONFIG_FILE is invalid")
            && stderr.contains(
                r#"{"api":[{"name":"must be string"},{"name":"must have a length of at least 1"}]}"#
            ),
        "{stderr}"
    );
}

#[tokio::test]
async fn http2_clients_reach_http1_backends() {
    let s = setup().await;
    let stream = TcpStream::connect(s.dp.inbound()).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .expect("h2c prior-knowledge handshake");
    tokio::spawn(conn);
    let req = Request::get(format!("http://{}/first/h2?a[b]=c", s.dp.inbound()))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let res = sender.send_request(req).await.expect("response");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.version(), http::Version::HTTP_2);
    // HTTP/1 connection headers of the backend's answer would break HTTP/2 (RIG #193).
    assert!(res.headers().get("x-upstream-private").is_none());
    assert_eq!(res.headers()["x-backend"], "one");
    let body = res.into_body().collect().await.expect("body").to_bytes();
    let e: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(e["path"], "/first/h2");
    assert_eq!(e["query"], "a[b]=c");
    assert_eq!(e["headers"]["host"], s.one.addr.to_string());
}

// ---- TLS, HTTP/2 and stalled bodies ----

/// How a [`ProtoBackend`] speaks.
enum Proto {
    /// Plain HTTP/1.1.
    H1,
    /// Plain HTTP/2 with prior knowledge (h2c) only.
    H2c,
    /// TLS with this certificate, offering these ALPN protocols (h2 when negotiated, else 1.1).
    Tls(Arc<rustls::ServerConfig>),
}

/// A backend that reports the HTTP version of each request it served and counts accepted TCP
/// connections and request bodies that broke off.
struct ProtoBackend {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

#[derive(Default)]
struct Seen {
    connections: AtomicU64,
    received: AtomicU64,
    aborted: AtomicU64,
}

async fn proto_backend(proto: Proto) -> ProtoBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Seen::default());
    let proto = Arc::new(proto);
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            s.connections.fetch_add(1, Ordering::Relaxed);
            let (seen, proto) = (s.clone(), proto.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| versioned(seen.clone(), req));
                let exec = hyper_util::rt::TokioExecutor::new();
                let _ = match &*proto {
                    Proto::H1 => {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Proto::H2c => {
                        hyper::server::conn::http2::Builder::new(exec)
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Proto::Tls(config) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                            hyper::server::conn::http2::Builder::new(exec)
                                .serve_connection(TokioIo::new(tls), service)
                                .await
                        } else {
                            hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tls), service)
                                .await
                        }
                    }
                };
            });
        }
    });
    ProtoBackend { addr, seen }
}

/// Answers `{"version", "path", "host", "body_len"}` after reading the whole body; a body that
/// breaks off is counted as aborted.
async fn versioned(
    seen: Arc<Seen>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let version = format!("{:?}", req.version());
    let path = req.uri().path().to_owned();
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(ToString::to_string));
    let mut body = req.into_body();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    len += data.len();
                    seen.received
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Err(_) => {
                seen.aborted.fetch_add(1, Ordering::Relaxed);
                return Ok(Response::new(Full::new(Bytes::new())));
            }
        }
    }
    let answer = json!({"version": version, "path": path, "host": host, "body_len": len});
    Ok(Response::new(Full::new(Bytes::from(answer.to_string()))))
}

/// A private CA and a server certificate it signed for 127.0.0.1 / localhost:
/// `(ca.pem path, server config without ALPN)`.
fn test_pki(dir: &std::path::Path) -> (PathBuf, rustls::ServerConfig) {
    let pki = rig_e2e::pki::Pki::new(dir);
    let config = pki.server_config("server");
    (pki.ca(), config)
}

/// A TLS backend offering `alpn`.
async fn tls_backend(config: &rustls::ServerConfig, alpn: &[&[u8]]) -> ProtoBackend {
    let mut config = config.clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    proto_backend(Proto::Tls(Arc::new(config))).await
}

/// One `ProxyRoute` (namespace `e2e`) with one endpoint `GET|PUT <path>`; `extra` goes into the
/// target, `timeout` into the response.
fn route(name: &str, method: &str, path: &str, url: &str, extra: &str, timeout: &str) -> String {
    format!(
        "---\napiVersion: rig.dev/v1alpha1\nkind: ProxyRoute\nmetadata: {{name: {name}, namespace: e2e}}\nspec:\n  endpoints: [{{id: e, method: {method}, pathRegex: '{path}'}}]\n  target: {{kind: Http, url: '{url}'{extra}}}\n  response: {{timeout: {timeout}}}\n"
    )
}

/// A data plane serving `routes` (plus `env`), with its temp dir.
async fn proxy_with(routes: &str, env: &[(&str, String)]) -> (DataPlane, PathBuf) {
    let dir = temp_dir();
    std::fs::write(dir.join("routes.yaml"), routes).expect("write");
    let mut config = DataPlaneConfig::new()
        .expect("ports")
        .env("RIG_MANIFESTS", dir.to_string_lossy());
    for (k, v) in env {
        config = config.env(k, v.clone());
    }
    (DataPlane::start(config).await.expect("data plane"), dir)
}

/// GET `path` `n` times at once; each answer's echo.
async fn concurrent(dp: &DataPlane, path: &str, n: usize) -> Vec<Value> {
    let calls = (0..n).map(|_| echoed(dp, path, &[]));
    futures::future::join_all(calls).await
}

#[tokio::test]
async fn https_targets_use_http2_when_offered_over_one_pooled_connection() {
    let pki = temp_dir();
    let (ca, tls) = test_pki(&pki);
    let h2 = tls_backend(&tls, &[b"h2", b"http/1.1"]).await;
    let h1 = tls_backend(&tls, &[b"http/1.1"]).await;
    let routes = route(
        "tls-h2",
        "GET",
        "/h2/.*",
        &format!("https://{}", h2.addr),
        "",
        "5s",
    ) + &route(
        "tls-h1",
        "GET",
        "/h1/.*",
        &format!("https://{}", h1.addr),
        "",
        "5s",
    ) + &route(
        "tls-only-h2",
        "GET",
        "/only-h2/.*",
        &format!("https://{}", h2.addr),
        ", http2: true",
        "5s",
    ) + &route(
        "tls-only-h2-to-h1",
        "GET",
        "/only-h2-to-h1/.*",
        &format!("https://{}", h1.addr),
        ", http2: true",
        "5s",
    );
    // A RIG definition may name an https:// target too (its scheme in target_url).
    let rig = json!([{"id": "rig-tls", "name": "rig-tls",
        "version_data": {"default": {"endpoints": [
            {"id": "e", "method": "GET", "path_regex": "/rig/.*"}]}},
        "proxy": {"target_url": "https://127.0.0.1", "port": h1.addr.port()}}]);
    let (dp, dir) = proxy_with(
        &routes,
        &[
            ("PROXY_TLS_CA_FILE", ca.to_string_lossy().into_owned()),
            ("PROXY_CONFIG_FILE", rig.to_string()),
        ],
    )
    .await;

    // ALPN settles on h2: the first request opens the connection, the next ones (some at once)
    // are multiplexed on it.
    let e = echoed(&dp, "/h2/first", &[]).await;
    assert_eq!(
        (e["version"].as_str(), e["path"].as_str()),
        (Some("HTTP/2.0"), Some("/h2/first"))
    );
    assert_eq!(e["host"], h2.addr.to_string());
    for e in concurrent(&dp, "/h2/many", 8).await {
        assert_eq!(e["version"], "HTTP/2.0");
    }
    for _ in 0..3 {
        assert_eq!(echoed(&dp, "/h2/again", &[]).await["version"], "HTTP/2.0");
    }
    assert_eq!(
        h2.seen.connections.load(Ordering::Relaxed),
        1,
        "12 requests over one HTTP/2 connection"
    );

    // A TLS backend without h2 is spoken to over HTTP/1.1.
    for path in ["/h1/a", "/rig/b"] {
        let e = echoed(&dp, path, &[]).await;
        assert_eq!(
            (e["version"].as_str(), e["path"].as_str()),
            (Some("HTTP/1.1"), Some(path))
        );
        assert_eq!(e["host"], h1.addr.to_string());
    }
    // `http2: true` on https:// offers only h2: fine with an h2 backend, 502 with an HTTP/1.1 one.
    assert_eq!(echoed(&dp, "/only-h2/x", &[]).await["version"], "HTTP/2.0");
    let (status, _, _) = call(&dp, Method::GET, "/only-h2-to-h1/x", &[], Bytes::new()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&pki);
}

#[tokio::test]
async fn untrusted_https_backends_get_502() {
    let pki = temp_dir();
    let (_, tls) = test_pki(&pki);
    let backend = tls_backend(&tls, &[b"h2", b"http/1.1"]).await;
    let routes = route(
        "tls",
        "GET",
        "/tls",
        &format!("https://{}", backend.addr),
        "",
        "5s",
    );
    // No PROXY_TLS_CA_FILE: the private CA is not trusted.
    let (dp, dir) = proxy_with(&routes, &[]).await;
    let (status, _, body) = call(&dp, Method::GET, "/tls", &[], Bytes::new()).await;
    assert_eq!(
        (status, body),
        (StatusCode::BAD_GATEWAY, Bytes::from("Bad gateway."))
    );
    assert!(
        backend.seen.connections.load(Ordering::Relaxed) >= 1,
        "the handshake was tried"
    );
    let line = r#"rig_proxy_requests_total{method="GET",path="/tls",target="http",response_from="http",status="unreachable"} 1"#;
    let (_, text) = client::get(dp.internal(), "/metrics")
        .await
        .expect("metrics");
    assert!(
        text.lines().any(|l| l == line),
        "{line} missing in:\n{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&pki);
}

#[tokio::test]
async fn h2c_backends_are_reached_with_the_http2_opt_in() {
    let backend = proto_backend(Proto::H2c).await;
    let url = format!("http://{}", backend.addr);
    let routes = route("h2c", "GET", "/grpc/.*", &url, ", http2: true", "5s")
        + &route("plain", "GET", "/plain/.*", &url, "", "5s");
    let (dp, dir) = proxy_with(&routes, &[]).await;
    let e = echoed(&dp, "/grpc/first", &[]).await;
    assert_eq!(e["version"], "HTTP/2.0");
    assert_eq!(e["host"], backend.addr.to_string());
    for e in concurrent(&dp, "/grpc/many", 8).await {
        assert_eq!(e["version"], "HTTP/2.0");
    }
    assert_eq!(backend.seen.connections.load(Ordering::Relaxed), 1);
    // Without the opt-in the gateway speaks HTTP/1.1, which an h2c-only backend refuses.
    let (status, _, _) = call(&dp, Method::GET, "/plain/x", &[], Bytes::new()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_stalled_upload_gets_408_and_the_upstream_request_is_aborted() {
    let h1 = proto_backend(Proto::H1).await;
    let h2c = proto_backend(Proto::H2c).await;
    // The route waits a minute for the response: only the body idle timeout can end this.
    let routes = route(
        "h1",
        "PUT",
        "/upload",
        &format!("http://{}", h1.addr),
        "",
        "60s",
    ) + &route(
        "h2c",
        "PUT",
        "/upload2",
        &format!("http://{}", h2c.addr),
        ", http2: true",
        "60s",
    );
    let (dp, dir) = proxy_with(
        &routes,
        &[
            ("PROXY_BODY_IDLE_TIMEOUT_MS", "300".into()),
            ("PROXY_MAX_BODY_BYTES", "1024".into()),
        ],
    )
    .await;
    for (path, backend, n) in [("/upload", &h1, 1.0), ("/upload2", &h2c, 2.0)] {
        let (tx, response) = streaming_request(dp.inbound(), path).await;
        tx.send(Bytes::from_static(b"the start of the upload"))
            .await
            .expect("chunk");
        wait_until("the backend receives the upload's start", T, || async {
            (backend.seen.received.load(Ordering::Relaxed) > 0).then_some(())
        })
        .await;
        // The client keeps the body open and sends nothing more.
        let res = tokio::time::timeout(T, response)
            .await
            .expect("answered while the upload is still open")
            .expect("task")
            .expect("response");
        assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT, "{path}");
        wait_until("the backend sees the request aborted", T, || async {
            (backend.seen.aborted.load(Ordering::Relaxed) == 1).then_some(())
        })
        .await;
        assert_eq!(
            dp.metric("rig_proxy_request_body_timeouts_total").await,
            n,
            "{path}"
        );
        drop(tx);
    }
    let line = r#"rig_proxy_requests_total{method="PUT",path="/upload",target="http",response_from="http",status="request_timeout"} 1"#;
    let (_, text) = client::get(dp.internal(), "/metrics")
        .await
        .expect("metrics");
    assert!(
        text.lines().any(|l| l == line),
        "{line} missing in:\n{text}"
    );
    // Over HTTP/2 too, a streamed body past PROXY_MAX_BODY_BYTES is a 413 (the body error only
    // resets the upstream stream, the gateway still knows why).
    for path in ["/upload", "/upload2"] {
        let (tx, response) = streaming_request(dp.inbound(), path).await;
        tx.send(Bytes::from(vec![b'x'; 1000])).await.expect("chunk");
        tx.send(Bytes::from(vec![b'y'; 1000])).await.expect("chunk");
        let res = tokio::time::timeout(T, response)
            .await
            .expect("answered while the upload is still open")
            .expect("task")
            .expect("response");
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        drop(tx);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A raw HTTP/1.1 backend on 127.0.0.1 that counts the connections it accepted and answers every
/// request with a 200 whose body names the connection (`conn-<n>`); a request for `/close`
/// is answered with `connection: close` and its connection is closed; `/chunked` answers
/// `conn-<n>` in two chunks with a trailer; `/eof` answers without a length and closes; a request
/// with a `content-length` body gets `conn-<n> got <body>`; `/early` sends a 103 and the answer
/// in one write.
async fn counting_backend() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request head per answer (the requests here have no body).
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < end + 4 + length {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let request_body =
                        String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                    buf.drain(..end + 4 + length);
                    let close = head.starts_with("GET /close ");
                    let eof = head.starts_with("GET /eof ");
                    let body = if length > 0 {
                        format!("conn-{n} got {request_body}")
                    } else {
                        format!("conn-{n}")
                    };
                    let answer = if head.starts_with("GET /early ") {
                        // An informational head and the answer in one write.
                        format!(
                            "HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    } else if head.starts_with("GET /chunked ") {
                        let (a, b) = body.split_at(3);
                        format!(
                            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\nx-trailer: 1\r\n\r\n",
                            a.len(),
                            b.len()
                        )
                    } else if eof {
                        format!("HTTP/1.1 200 OK\r\n\r\n{body}")
                    } else {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{}\r\n{body}",
                            body.len(),
                            if close { "connection: close\r\n" } else { "" }
                        )
                    };
                    if stream.write_all(answer.as_bytes()).await.is_err() || close || eof {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// `http://` targets use the data plane's own HTTP/1.1 pool: sequential requests share one
/// upstream connection, and a connection the backend closes (`connection: close`) is not reused:
/// the next request opens a new one and gets its answer.
#[tokio::test]
async fn http1_upstream_connections_are_pooled_and_closed_ones_replaced() {
    let (addr, accepted) = counting_backend().await;
    let routes = route("pooled", "GET", "/.*", &format!("http://{addr}"), "", "5s");
    let (dp, _dir) = proxy_with(&routes, &[]).await;
    for i in 0..20 {
        let (status, _, body) = call(&dp, Method::GET, &format!("/r{i}"), &[], Bytes::new()).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
        assert_eq!(body, "conn-1", "request {i} went over another connection");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // The backend ends its connection after this answer: it is not handed out again.
    let (status, _, body) = call(&dp, Method::GET, "/close", &[], Bytes::new()).await;
    assert_eq!(
        (status, body.as_ref()),
        (StatusCode::OK, b"conn-1".as_ref())
    );
    for i in 0..5 {
        let (status, _, body) =
            call(&dp, Method::GET, &format!("/after{i}"), &[], Bytes::new()).await;
        assert_eq!(status, StatusCode::OK, "request {i} after the close");
        assert_eq!(body, "conn-2", "request {i} after the close");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// One client connection carrying plain proxied GETs (served by the direct path) and then
/// requests the direct path hands to hyper (a body upload, a `/_rig` path) and back to GETs:
/// every answer is right and in order; chunked answers are relayed with their framing, answers
/// delimited by the backend closing end the client connection, pipelined requests are answered
/// in order.
#[tokio::test]
async fn one_connection_mixes_direct_and_hyper_served_requests() {
    let (addr, accepted) = counting_backend().await;
    let url = format!("http://{addr}");
    // Ordered by name: `a-dead` (nothing listens on port 1) is matched first.
    let routes = [
        route("a-dead", "GET", "/dead/.*", "http://127.0.0.1:1", "", "5s"),
        route("mixed", "GET", "/.*", &url, "", "5s"),
        route("mixed-post", "POST", "/.*", &url, "", "5s"),
    ]
    .concat();
    let (dp, _dir) = proxy_with(&routes, &[]).await;
    let mut sender = keep_alive(&dp).await;
    let mut exchange = |method: Method, path: &'static str, body: &'static str| {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "gateway")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("request");
        let sent = sender.send_request(req);
        async move {
            let res = sent.await.expect("answer");
            let status = res.status();
            let headers = res.headers().clone();
            let body = res.into_body().collect().await.expect("body").to_bytes();
            (status, headers, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, _, body) = exchange(Method::GET, "/a", "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "conn-1"));
    let (status, _, body) = exchange(Method::GET, "/early", "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "conn-1"));
    let (status, headers, body) = exchange(Method::GET, "/chunked", "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "conn-1"));
    assert_eq!(headers["transfer-encoding"], "chunked");
    // A body: hyper serves the connection from here on, over the same upstream pool rules.
    let (status, _, body) = exchange(Method::POST, "/upload", "payload").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.ends_with(" got payload"), "{body}");
    let (status, _, body) = exchange(Method::GET, "/_rig/health", "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "OK"));
    let (status, _, body) = exchange(Method::GET, "/b", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("conn-"), "{body}");

    // A HEAD answered 502 here has no body: the next answer on the connection is intact.
    let text = raw_exchange(
        &dp,
        b"HEAD /dead/x HTTP/1.1\r\nhost: g\r\n\r\nGET /after HTTP/1.1\r\nhost: g\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 502 "), "{text}");
    assert!(!text.contains("Bad gateway."), "{text}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 2, "{text}");
    assert!(text.contains("HTTP/1.1 200 OK"), "{text}");

    // Pipelined GETs on a fresh connection, then an answer delimited by the backend's close.
    let text = raw_exchange(
        &dp,
        b"GET /p1 HTTP/1.1\r\nhost: g\r\n\r\nGET /chunked HTTP/1.1\r\nhost: g\r\n\r\nGET /eof HTTP/1.1\r\nhost: g\r\n\r\n",
    )
    .await;
    let answers: Vec<&str> = text
        .match_indices("HTTP/1.1 200")
        .map(|(i, _)| &text[i..])
        .collect();
    assert_eq!(answers.len(), 3, "{text}");
    assert!(
        answers[0].contains("content-length: 6") && answers[0].contains("\r\n\r\nconn-"),
        "{text}"
    );
    assert!(
        answers[1].contains("transfer-encoding: chunked")
            && answers[1].contains("0\r\nx-trailer: 1\r\n\r\n"),
        "{text}"
    );
    assert!(answers[2].contains("connection: close"), "{text}");
    // The close-delimited body is relayed whole before the connection ends.
    assert!(
        answers[2]
            .split("\r\n\r\n")
            .nth(1)
            .is_some_and(|body| body.starts_with("conn-") && body.len() > 5),
        "{text}"
    );
    // Two upstream connections: one in each path's pool, each reused by its later requests.
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// Paths are normalised before matching, auth and rewriting: dot segments (also percent-encoded),
/// repeated slashes and encoded unreserved characters cannot reach a secured endpoint through an
/// open one; ambiguous paths (an encoded `/`) are refused; the backend sees the normal form.
#[tokio::test]
async fn paths_are_normalised_before_matching_and_auth() {
    let s = setup().await;
    let before = s.one.requests.load(Ordering::Relaxed);
    for path in [
        "/first/../secure/x",
        "/first/%2e%2e/secure/x",
        "/first/%2E%2E/secure/x",
        "//secure/x",
        "/%73ecure/x",
        "/first/./../secure/x",
    ] {
        let answer = raw_exchange(
            &s.dp,
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 401"),
            "{path} must reach the secured endpoint's auth: {answer}"
        );
    }
    assert_eq!(
        s.one.requests.load(Ordering::Relaxed),
        before,
        "nothing reached the backend without a JWT"
    );
    let answer = raw_exchange(
        &s.dp,
        b"GET /secure%2Fx HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("an encoded '/'"), "{answer}");
    // What the backend gets is the normal form the route matched.
    let answer = raw_exchange(
        &s.dp,
        b"GET /first/./a/../b?q=1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"path\":\"/first/b\""), "{answer}");
    assert!(answer.contains("\"query\":\"q=1\""), "{answer}");
}

/// A dot segment with parameters (`..;`), which several servers read as `..`, is refused.
#[tokio::test]
async fn dot_segments_with_parameters_are_refused() {
    let s = setup().await;
    for path in ["/first/..;/secure/x", "/first/%2e%2e;x/secure/x"] {
        let answer = raw_exchange(
            &s.dp,
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
    }
    assert_eq!(s.one.requests.load(Ordering::Relaxed), 0);
}
