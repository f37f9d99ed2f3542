//! The Kafka proxy target and correlated responses (sync-over-async), end to end: the real
//! `rig-dataplane` against the real Kafka, with a responder task in the test that consumes the
//! request topic and produces correlated responses, and a real HTTP backend for `http_async`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use rig_e2e::dataplane::{self, DataPlane, DataPlaneConfig};
use rig_e2e::kafka;
use rig_e2e::{Env, http as client, unique_name, wait_until};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(60);
const CORS: &str = "https://app.example";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

// ---- Kafka helpers ----

fn brokers(env: &Env) -> String {
    env.kafka_brokers().expect("kafka").to_owned()
}

async fn topic(env: &Env, prefix: &str, partitions: i32) -> String {
    kafka::new_topic(&brokers(env), prefix, partitions)
        .await
        .expect("create topic")
}

fn producer(env: &Env) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers(env))
        .set("linger.ms", "1")
        .create()
        .expect("producer")
}

/// A consumer of every partition of `topic` from its beginning (topics are fresh per test).
fn consumer(env: &Env, topic: &str, partitions: i32) -> StreamConsumer {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers(env))
        .set("group.id", unique_name("e2e-reader"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    c.assign(&list).expect("assign");
    c
}

/// One consumed message: payload as JSON, headers, key.
struct Consumed {
    json: Value,
    headers: Vec<(String, String)>,
    key: Option<String>,
}

async fn next(c: &StreamConsumer) -> Consumed {
    let m = tokio::time::timeout(T, c.recv())
        .await
        .expect("a message in time")
        .expect("message");
    let json = serde_json::from_slice(m.payload().unwrap_or_default()).expect("JSON payload");
    let headers = m
        .headers()
        .iter()
        .flat_map(|h| h.iter())
        .map(|h| {
            (
                h.key.to_owned(),
                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
    Consumed { json, headers, key }
}

/// Produce a correlated response.
async fn respond(
    p: &FutureProducer,
    topic: &str,
    correlation: &str,
    code: &str,
    body: &str,
    n: &str,
) {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "rig-correlation",
            value: Some(correlation),
        })
        .insert(Header {
            key: "rig-response-code",
            value: Some(code),
        })
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        })
        .insert(Header {
            key: "x-request",
            value: Some(n),
        });
    p.send(
        FutureRecord::<str, str>::to(topic)
            .payload(body)
            .headers(headers),
        Duration::from_secs(30),
    )
    .await
    .expect("response delivered");
}

/// The responder: for every request event, answer 201 with `{"n": <data.n>}` and `x-request`.
fn responder(
    env: &Env,
    requests: &str,
    partitions: i32,
    responses: &str,
) -> tokio::task::JoinHandle<()> {
    let c = consumer(env, requests, partitions);
    let p = producer(env);
    let responses = responses.to_owned();
    tokio::spawn(async move {
        loop {
            let Ok(m) = c.recv().await else { continue };
            let Ok(event) = serde_json::from_slice::<Value>(m.payload().unwrap_or_default()) else {
                continue;
            };
            let correlation = event["rig"]["correlation"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let n = event["data"]["n"].as_u64().unwrap_or(u64::MAX);
            let p = p.clone();
            let responses = responses.clone();
            tokio::spawn(async move {
                respond(
                    &p,
                    &responses,
                    &correlation,
                    "201",
                    &json!({"n": n}).to_string(),
                    &n.to_string(),
                )
                .await;
            });
        }
    })
}

// ---- data planes ----

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("rig-proxy-kafka"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn kafka_route(
    name: &str,
    path: &str,
    topic: &str,
    from: &str,
    timeout: &str,
    extra: &str,
) -> String {
    format!(
        "apiVersion: rig.dev/v1alpha1\nkind: ProxyRoute\nmetadata: {{name: {name}, namespace: e2e}}\nspec:\n  endpoints:\n    - {{id: post, method: POST, pathRegex: '{path}'}}\n    - {{id: options, method: OPTIONS, pathRegex: '{path}'}}\n  target: {{kind: Kafka, topic: {topic}{extra}}}\n  response: {{from: {from}, timeout: {timeout}}}\n---\n"
    )
}

fn config(
    env: Option<&Env>,
    brokers_override: Option<&str>,
    owner: &str,
    routes: &str,
    responses: &str,
) -> DataPlaneConfig {
    let dir = temp_dir();
    std::fs::write(dir.join("routes.yaml"), routes).expect("write");
    let mut config = DataPlaneConfig::new()
        .expect("ports")
        .env("RIG_MANIFESTS", dir.to_string_lossy())
        .env("POD_NAME", owner)
        .env("CORS", CORS)
        .env("PROXY_KAFKA_RESPONSE_TOPICS", responses);
    if let Some(b) = brokers_override {
        config = config.env("KAFKA_BROKERS", b);
    } else if let Some(env) = env {
        config = config
            .env("KAFKA_BROKERS", brokers(env))
            .env("KAFKA_SOURCE_TOPICS", unique_name("unused-events"));
    }
    config
}

async fn start(
    env: Option<&Env>,
    brokers_override: Option<&str>,
    owner: &str,
    routes: &str,
    responses: &str,
) -> DataPlane {
    DataPlane::start(config(env, brokers_override, owner, routes, responses))
        .await
        .expect("data plane")
}

async fn wait_response_partitions(dp: &DataPlane, n: i32) {
    wait_until("response partitions assigned", T, || async {
        (dp.metric("rig_proxy_response_partitions").await >= f64::from(n)).then_some(())
    })
    .await;
}

async fn post(
    addr: SocketAddr,
    path: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> client::Answer {
    let mut req =
        client::request(Method::POST, addr, path).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client::send(addr, req.body(Full::new(body.into())).expect("request"))
        .await
        .expect("answer")
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---- tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_target_produces_cloudevents_with_the_rig_extension_and_answers_after_the_ack() {
    let env = Env::load().expect("env");
    let requests = topic(&env, "proxy-requests", 1).await;
    let responses = topic(&env, "proxy-responses", 1).await;
    let routes = [
        kafka_route("strict", "/strict/(.*)", &requests, "Http", "10s", ""),
        kafka_route(
            "wrap",
            "/wrap",
            &requests,
            "Http",
            "10s",
            ", wrapPlainJson: true",
        ),
        kafka_route(
            "typed",
            "/typed",
            &requests,
            "Http",
            "10s",
            ", wrapPlainJson: true, wrapEventType: order.created",
        ),
    ]
    .concat();
    let dp = start(Some(&env), None, "kafka-ff", &routes, &responses).await;
    let reader = consumer(&env, &requests, 1);

    let ce = json!({"specversion": "1.0", "type": "order.placed", "source": "/shop", "id": "o-1",
        "data": {"x": 1}, "rig": {"target_partition": "customer-7", "correlation": "forged"}});
    let (status, headers, body) = post(
        dp.inbound(),
        "/strict/orders?a=1&b[c]=2",
        ce.to_string(),
        &[("traceparent", TRACEPARENT), ("x-custom", "yes")],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{}", text(&body));
    assert_eq!(text(&body), "Accepted.");
    assert_eq!(headers["access-control-allow-origin"], CORS);
    // 202 came after the broker's ack: the message is there to read.
    let got = next(&reader).await;
    assert_eq!(got.json["type"], "order.placed");
    assert_eq!(got.json["data"], json!({"x": 1}));
    assert_eq!(got.json["traceparent"], TRACEPARENT);
    let rig = &got.json["rig"];
    assert!(
        rig["correlation"]
            .as_str()
            .is_some_and(|c| c.starts_with("kafka-ff.")),
        "the correlation is overwritten and names the process: {rig}"
    );
    assert_eq!(rig["method"], "POST");
    assert_eq!(rig["path"], "/strict/orders");
    assert_eq!(rig["query"], "a=1&b[c]=2");
    assert_eq!(rig["scheme"], "http");
    assert_eq!(rig["remoteip"], "127.0.0.1");
    assert_eq!(rig["host"], "127.0.0.1");
    assert_eq!(rig["port"], dp.inbound().port());
    assert_eq!(rig["target_partition"], "customer-7");
    assert!(
        rig["headers"]
            .as_array()
            .expect("headers")
            .contains(&json!(["x-custom", "yes"])),
        "{rig}"
    );
    assert_eq!(got.key.as_deref(), Some("customer-7"));
    assert!(
        got.headers
            .contains(&("traceparent".into(), TRACEPARENT.into())),
        "{:?}",
        got.headers
    );

    // RIG's 400s when the route does not wrap.
    let (status, headers, body) = post(dp.inbound(), "/strict/x", r#"{"a":1}"#, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        text(&body),
        "Bad request: the body does not look like a CloudEvent."
    );
    assert!(
        headers.get("access-control-allow-origin").is_none(),
        "RIG: no CORS on these 400s"
    );
    let (status, _, body) = post(dp.inbound(), "/strict/x", "not json", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        text(&body),
        "Bad request: expected a JSON encoded request body."
    );
    let (status, _, _) = post(dp.inbound(), "/wrap", "not json", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "wrapping still needs JSON");

    // Plain JSON wrapped where allowed.
    let (status, _, _) = post(dp.inbound(), "/wrap", r#"{"n":5}"#, &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let got = next(&reader).await;
    assert_eq!(got.json["specversion"], "1.0");
    assert_eq!(got.json["type"], "POST /wrap");
    assert_eq!(got.json["data"], json!({"n": 5}));
    assert!(got.json["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(
        got.json["traceparent"]
            .as_str()
            .is_some_and(|t| t.starts_with("00-")),
        "a trace is started"
    );
    let (status, _, _) = post(dp.inbound(), "/typed", r#"[1,2]"#, &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let got = next(&reader).await;
    assert_eq!(got.json["type"], "order.created");
    assert_eq!(got.json["data"], json!([1, 2]));

    // Preflight answered locally.
    let req = client::request(Method::OPTIONS, dp.inbound(), "/wrap")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, headers, _) = client::send(dp.inbound(), req).await.expect("options");
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers["access-control-allow-methods"], "*");
    assert_eq!(
        headers["access-control-allow-headers"],
        "content-type,authorization"
    );

    let produced = format!("rig_produced_events_total{{target=\"kafka\",topic=\"{requests}\"}}");
    assert_eq!(dp.metric(&produced).await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reachable_broker_the_kafka_target_answers_503_never_202() {
    let routes = kafka_route("down", "/down", "nowhere", "Http", "1500ms", "");
    // No KAFKA_BROKERS at all.
    let dp = start(None, None, "no-kafka", &routes, "unused").await;
    let (status, _, body) = post(
        dp.inbound(),
        "/down",
        r#"{"specversion":"1.0","type":"t","source":"s","id":"1"}"#,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(text(&body).contains("KAFKA_BROKERS"), "{}", text(&body));
    // Bodies RIG refuses get its 400 whether a broker is configured or not: 503 is only for
    // bodies it would have accepted.
    for refused in ["not json", r#"{"no":"cloudevent"}"#, "[1,2]"] {
        let (status, _, body) = post(dp.inbound(), "/down", refused, &[]).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{refused}: {}",
            text(&body)
        );
        assert!(!text(&body).contains("KAFKA_BROKERS"), "{}", text(&body));
    }
    // A broker address where nothing listens: no acknowledgement within the route timeout.
    let closed = dataplane::free_addr().expect("port").to_string();
    let dp = start(None, Some(&closed), "dead-kafka", &routes, "unused").await;
    let (status, _, body) = post(
        dp.inbound(),
        "/down",
        r#"{"specversion":"1.0","type":"t","source":"s","id":"1"}"#,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{}", text(&body));
    let failed = "rig_produced_events_failed_total{target=\"kafka\",topic=\"nowhere\"}";
    assert_eq!(dp.metric(failed).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_across_two_processes_each_get_their_own_response() {
    const N: u64 = 1000;
    const PARTITIONS: i32 = 4;
    let env = Env::load().expect("env");
    let requests = topic(&env, "sync-requests", PARTITIONS).await;
    let responses = topic(&env, "sync-responses", PARTITIONS).await;
    let routes = kafka_route("sync", "/sync", &requests, "Kafka", "30s", "");
    let a = start(Some(&env), None, "sync-a", &routes, &responses).await;
    let b = start(Some(&env), None, "sync-b", &routes, &responses).await;
    wait_response_partitions(&a, PARTITIONS).await;
    wait_response_partitions(&b, PARTITIONS).await;
    let _responder = responder(&env, &requests, PARTITIONS, &responses);

    let targets = [a.inbound(), b.inbound()];
    let mut tasks = Vec::new();
    for n in 0..N {
        // Round-robin over the two processes, as a load balancer would.
        let addr = targets[(n % 2) as usize];
        tasks.push(tokio::spawn(async move {
            let ce = json!({"specversion": "1.0", "type": "sync.request", "source": "/e2e",
                "id": format!("r-{n}"), "data": {"n": n}});
            let (status, headers, body) = post(addr, "/sync", ce.to_string(), &[]).await;
            (n, status, headers, body)
        }));
    }
    let mut seen = vec![false; N as usize];
    for task in tasks {
        let (n, status, headers, body) = task.await.expect("request task");
        assert_eq!(status, StatusCode::CREATED, "request {n}: {}", text(&body));
        let got: Value = serde_json::from_slice(&body).expect("JSON body");
        assert_eq!(got["n"], n, "request {n} got another request's response");
        assert_eq!(headers["x-request"], n.to_string().as_str());
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["access-control-allow-origin"], CORS);
        assert!(headers.get("rig-correlation").is_none());
        assert!(
            headers.contains_key("traceparent"),
            "the request's trace comes back"
        );
        seen[n as usize] = true;
    }
    assert!(seen.iter().all(|s| *s));
    for dp in [&a, &b] {
        assert_eq!(dp.metric("rig_proxy_pending_correlations").await, 0.0);
        assert_eq!(
            dp.metric("rig_proxy_correlations_total{outcome=\"responded\"}")
                .await,
            (N / 2) as f64
        );
        // Each process saw (and dropped by the header) the other's responses.
        // (At least: a producer retry may deliver a response twice.)
        assert!(dp.metric("rig_proxy_foreign_responses_total").await >= (N / 2) as f64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_response_late_response_and_a_vanished_client() {
    let env = Env::load().expect("env");
    let requests = topic(&env, "late-requests", 1).await;
    let responses = topic(&env, "late-responses", 1).await;
    let routes = [
        kafka_route("late", "/late", &requests, "Kafka", "1s", ""),
        kafka_route("vanish", "/vanish", &requests, "Kafka", "60s", ""),
    ]
    .concat();
    let dp = start(Some(&env), None, "late-a", &routes, &responses).await;
    wait_response_partitions(&dp, 1).await;
    let reader = consumer(&env, &requests, 1);
    let p = producer(&env);
    let ce = |n: u64| {
        json!({"specversion": "1.0", "type": "t", "source": "/e2e", "id": n.to_string(), "data": {"n": n}}).to_string()
    };

    // Nobody answers (responder down): 504, empty body, CORS.
    let (status, headers, body) = post(dp.inbound(), "/late", ce(1), &[]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(body.is_empty());
    assert_eq!(headers["access-control-allow-origin"], CORS);
    let first = next(&reader).await;

    // The answer comes after the timeout: dropped and counted.
    respond(
        &p,
        &responses,
        first.json["rig"]["correlation"]
            .as_str()
            .expect("correlation"),
        "200",
        "{}",
        "1",
    )
    .await;
    wait_until("late response counted", T, || async {
        (dp.metric("rig_proxy_late_responses_total").await == 1.0).then_some(())
    })
    .await;
    assert_eq!(
        dp.metric("rig_proxy_correlations_total{outcome=\"timed_out\"}")
            .await,
        1.0
    );

    // A client that leaves while waiting leaves nothing behind.
    let addr = dp.inbound();
    let waiting = tokio::spawn(async move { post(addr, "/vanish", ce(2), &[]).await });
    let second = next(&reader).await;
    assert_eq!(second.json["data"]["n"], 2);
    waiting.abort();
    wait_until("abandoned entry removed", T, || async {
        let abandoned = dp
            .metric("rig_proxy_correlations_total{outcome=\"abandoned\"}")
            .await;
        (abandoned == 1.0 && dp.metric("rig_proxy_pending_correlations").await == 0.0).then_some(())
    })
    .await;
}

// ---- http_async ----

/// What the async backend does for a path.
struct AsyncBackend {
    addr: SocketAddr,
    /// The data plane's internal port, known once it started.
    internal: Arc<Mutex<Option<SocketAddr>>>,
    /// Status codes `/v3/responses` gave the backend's response posts.
    posted: mpsc::UnboundedReceiver<(String, StatusCode, String)>,
}

async fn async_backend() -> AsyncBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let internal: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
    let (tx, posted) = mpsc::unbounded_channel();
    let shared = internal.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let internal = shared.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, internal.clone(), tx.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    AsyncBackend {
        addr,
        internal,
        posted,
    }
}

async fn answer(
    req: Request<Incoming>,
    internal: Arc<Mutex<Option<SocketAddr>>>,
    tx: mpsc::UnboundedSender<(String, StatusCode, String)>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let correlation = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("correlation=")))
        .unwrap_or_default()
        .to_owned();
    if path == "/direct" {
        return Ok(Response::builder()
            .status(200)
            .header("x-direct", "1")
            .body(Full::new(Bytes::from_static(b"direct answer")))
            .expect("response"));
    }
    let internal = internal.lock().expect("lock").expect("data plane started");
    let code = match path.as_str() {
        "/async" => Some("207"),
        "/bad" => Some("abc201"),
        _ => None, // "/silent": accepted, never answered
    };
    if let Some(code) = code {
        tokio::spawn(async move {
            let req = client::request(Method::POST, internal, "/v3/responses")
                .header("rig-correlation", correlation.as_str())
                .header("rig-response-code", code)
                .header("content-type", "application/json")
                .header("x-backend", "async")
                .body(Full::new(Bytes::from_static(br#"{"done":true}"#)))
                .expect("request");
            let (status, _, body) = client::send(internal, req).await.expect("posted");
            let _ = tx.send((path, status, text(&body)));
        });
    }
    Ok(Response::builder()
        .status(202)
        .body(Full::new(Bytes::from_static(b"later")))
        .expect("response"))
}

fn async_routes(backend: SocketAddr) -> String {
    format!(
        "apiVersion: rig.dev/v1alpha1\nkind: ProxyRoute\nmetadata: {{name: async, namespace: e2e}}\nspec:\n  endpoints:\n    - {{id: get, method: GET, pathRegex: '/(direct|async|bad|silent)'}}\n  target: {{kind: Http, url: 'http://{}'}}\n  response: {{from: HttpAsync, timeout: 2s}}\n",
        backend
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_posted_to_another_process_is_forwarded_to_the_one_holding_the_request() {
    let mut backend = async_backend().await;
    let routes = async_routes(backend.addr);
    let a = config(None, None, "fwd-a", &routes, "unused");
    let b = config(None, None, "fwd-b", &routes, "unused");
    let peers = format!("fwd-a=http://{},fwd-b=http://{}", a.internal, b.internal);
    let a = DataPlane::start(a.env("RIG_PEERS", &peers))
        .await
        .expect("a");
    let b = DataPlane::start(b.env("RIG_PEERS", &peers))
        .await
        .expect("b");
    // The backend posts its responses to b (as a Service would pick any pod); a holds the request.
    *backend.internal.lock().expect("lock") = Some(b.internal());
    let req = client::request(Method::GET, a.inbound(), "/async")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, headers, body) = client::send(a.inbound(), req).await.expect("answer");
    assert_eq!(status.as_u16(), 207, "{}", text(&body));
    assert_eq!(text(&body), r#"{"done":true}"#);
    assert_eq!(headers["x-backend"], "async");
    assert!(headers.get("rig-forwarded-by-peer").is_none());
    let (_, status, answer) = backend.posted.recv().await.expect("posted");
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(
        a.metric("rig_proxy_correlations_total{outcome=\"responded\"}")
            .await,
        1.0
    );
    // A forwarded response is never forwarded again: b answers 409 for a's id when it arrives
    // marked as forwarded (a misconfigured peer map cannot loop).
    let req = client::request(Method::POST, b.internal(), "/v3/responses")
        .header("rig-correlation", "fwd-a.1.00000000000000aa")
        .header("rig-response-code", "200")
        .header("rig-forwarded-by-peer", "1")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, _, _) = client::send(b.internal(), req).await.expect("answer");
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_async_responses_through_v3_responses() {
    let mut backend = async_backend().await;
    let routes = async_routes(backend.addr);
    let dp = start(None, None, "async-a", &routes, "unused").await;
    *backend.internal.lock().expect("lock") = Some(dp.internal());
    let get = |path: &'static str| {
        let addr = dp.inbound();
        async move {
            let req = client::request(Method::GET, addr, path)
                .body(Full::new(Bytes::new()))
                .expect("request");
            client::send(addr, req).await.expect("answer")
        }
    };

    // A backend answering other than 202 is passed through at once.
    let (status, headers, body) = get("/direct").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text(&body), "direct answer");
    assert_eq!(headers["x-direct"], "1");

    // 202, then the response arrives on /v3/responses: the client gets its status, body, headers.
    let (status, headers, body) = get("/async").await;
    assert_eq!(status.as_u16(), 207, "{}", text(&body));
    assert_eq!(text(&body), r#"{"done":true}"#);
    assert_eq!(headers["x-backend"], "async");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["access-control-allow-origin"], CORS);
    let (path, status, answer) = backend.posted.recv().await.expect("posted");
    assert_eq!((path.as_str(), status), ("/async", StatusCode::ACCEPTED));
    assert_eq!(answer, "message sent to correlated reverse proxy request");

    // A malformed response is refused with 400; the waiting client then times out.
    let (status, headers, body) = get("/bad").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(body.is_empty());
    assert_eq!(headers["access-control-allow-origin"], CORS);
    let (path, status, answer) = backend.posted.recv().await.expect("posted");
    assert_eq!((path.as_str(), status), ("/bad", StatusCode::BAD_REQUEST));
    assert!(answer.contains("rig-response-code"), "{answer}");

    // Nobody answers: 504.
    let (status, _, _) = get("/silent").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);

    // Direct posts: missing header, unknown correlation, another process's correlation.
    let post_response = |correlation: Option<&'static str>, code: Option<&'static str>| {
        let internal = dp.internal();
        async move {
            let mut req = client::request(Method::POST, internal, "/v3/responses");
            if let Some(c) = correlation {
                req = req.header("rig-correlation", c);
            }
            if let Some(c) = code {
                req = req.header("rig-response-code", c);
            }
            let (status, _, body) = client::send(
                internal,
                req.body(Full::new(Bytes::new())).expect("request"),
            )
            .await
            .expect("answer");
            (status, text(&body))
        }
    };
    let (status, body) = post_response(None, Some("200")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("rig-correlation"), "{body}");
    let (status, body) = post_response(Some("async-a.ffff.00000000000000aa"), Some("200")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no request waiting"), "{body}");
    let (status, body) = post_response(Some("async-b.1.00000000000000aa"), Some("200")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains("async-b"), "{body}");
    let (status, _) = post_response(Some("garbage"), Some("200")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(dp.metric("rig_proxy_pending_correlations").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rig_definitions_wait_for_the_kafka_response_until_the_responder_stops() {
    let env = Env::load().expect("env");
    let requests = topic(&env, "rig-requests", 1).await;
    let responses = topic(&env, "rig-responses", 1).await;
    let definitions = json!([{
        "id": "rig-kafka", "name": "rig-kafka",
        "version_data": {"default": {"endpoints": [
            {"id": "ask", "method": "POST", "path_regex": "/ask", "target": "kafka",
             "topic": requests, "response_from": "kafka"}
        ]}},
        "proxy": {"use_env": false, "target_url": "http://127.0.0.1", "port": 9}
    }]);
    let unrelated = kafka_route("unrelated", "/unrelated", &requests, "Http", "5s", "");
    let config = config(Some(&env), None, "rig-def", &unrelated, &responses)
        .env("PROXY_CONFIG_FILE", definitions.to_string())
        .env("PROXY_KAFKA_RESPONSE_TIMEOUT", "1500");
    let dp = DataPlane::start(config).await.expect("data plane");
    wait_response_partitions(&dp, 1).await;
    let responder = responder(&env, &requests, 1, &responses);
    let ce = |n: u64| {
        json!({"specversion": "1.0", "type": "t", "source": "/e2e", "id": n.to_string(), "data": {"n": n}})
            .to_string()
    };
    let (status, headers, body) = post(dp.inbound(), "/ask", ce(7), &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{}", text(&body));
    assert_eq!(headers["x-request"], "7");
    assert_eq!(
        headers["access-control-allow-headers"],
        "content-type,authorization"
    );
    // The responder goes down: PROXY_KAFKA_RESPONSE_TIMEOUT later, 504.
    responder.abort();
    let _ = responder.await;
    let (status, _, body) = post(dp.inbound(), "/ask", ce(8), &[]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(body.is_empty());
    assert_eq!(
        dp.metric("rig_proxy_correlations_total{outcome=\"timed_out\"}")
            .await,
        1.0
    );
}

/// The message key (`rig.target_partition`) lands on RIG's partition for it,
/// `murmur3_x86_32(key) mod n`: "hello" on partition 6 of 7 (librdkafka's CRC32 rule: 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_key_lands_on_rigs_partition() {
    let env = Env::load().expect("env");
    let requests = topic(&env, "proxy-keyed", 7).await;
    let responses = topic(&env, "proxy-keyed-responses", 1).await;
    let routes = kafka_route("keyed", "/keyed", &requests, "Http", "10s", "");
    let dp = start(Some(&env), None, "kafka-keyed", &routes, &responses).await;
    let reader = consumer(&env, &requests, 7);
    let ce = json!({"specversion": "1.0", "type": "order.placed", "source": "/shop", "id": "k-1",
        "data": {}, "rig": {"target_partition": "hello"}});
    let (status, _, body) = post(dp.inbound(), "/keyed", ce.to_string(), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{}", text(&body));
    let m = tokio::time::timeout(T, reader.recv())
        .await
        .expect("a message in time")
        .expect("message");
    assert_eq!(m.key(), Some(&b"hello"[..]));
    assert_eq!(m.partition(), 6);
}

/// A backend that answers every request 200 `ok`.
async fn ok_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// RIG's `REQUEST_LOG`: every proxied call that passed its JWT check is logged to the console
/// (`CALL: [<endpoint id>] <METHOD> <path_regex> => <target>`) and produced to `KAFKA_LOG_TOPIC`
/// as a CloudEvents 0.2 `com.rig.proxy.api.call` event, keyed `partition`, read back here from the
/// real broker. A refused call (401) is not logged; unknown values and `kafka` without a broker
/// stop the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_log_goes_to_the_console_and_to_kafka_as_rig_logs_it() {
    let env = Env::load().expect("env");
    let log_topic = topic(&env, "request-log", 3).await;
    let backend = ok_backend().await;
    let apis = json!([{
        "id": "logged", "name": "logged", "auth_type": "jwt",
        "auth": {"use_header": true, "header_name": "Authorization"},
        "version_data": {"default": {"endpoints": [
            {"id": "e-log", "method": "GET", "path_regex": "/log/(.*)"},
            {"id": "e-secret", "method": "GET", "path_regex": "/secret", "secured": true}
        ]}},
        "proxy": {"target_url": "127.0.0.1", "port": backend.port()}
    }]);
    let stdout = temp_dir().join("stdout.log");
    let dp = DataPlane::start(
        DataPlaneConfig::new()
            .expect("ports")
            .env("KAFKA_BROKERS", brokers(&env))
            .env("KAFKA_SOURCE_TOPICS", unique_name("unused-events"))
            .env("JWT_SECRET_KEY", "request-log-secret")
            .env("REQUEST_LOG", "console,kafka")
            .env("KAFKA_LOG_TOPIC", &log_topic)
            .env("PROXY_CONFIG_FILE", apis.to_string())
            .stdout_to(stdout.clone()),
    )
    .await
    .expect("start");

    let get = |path: &'static str| {
        let addr = dp.inbound();
        async move {
            let req = client::request(Method::GET, addr, path)
                .header("traceparent", TRACEPARENT)
                .body(Full::new(Bytes::new()))
                .expect("request");
            client::send(addr, req).await.expect("answer").0
        }
    };
    assert_eq!(get("/log/first").await, StatusCode::OK);
    assert_eq!(get("/secret").await, StatusCode::UNAUTHORIZED);
    assert_eq!(get("/log/second").await, StatusCode::OK);

    let reader = consumer(&env, &log_topic, 3);
    // Produced as the calls come, not held back for each other: any order.
    let mut logged = [next(&reader).await, next(&reader).await];
    logged.sort_by_key(|c| c.json["data"]["request_path"].as_str().map(str::to_owned));
    let [first, second] = logged;
    for (event, path) in [(&first, "/log/first"), (&second, "/log/second")] {
        let json = &event.json;
        assert_eq!(json["specversion"], "0.2", "{json}");
        assert_eq!(json["type"], "com.rig.proxy.api.call");
        assert_eq!(json["source"], "/rig");
        assert_eq!(json["contenttype"], "application/json");
        assert_eq!(json["traceparent"], TRACEPARENT);
        assert!(
            json["time"].as_str().is_some_and(|t| t.ends_with("+00:00")),
            "{json}"
        );
        assert_eq!(json["data"]["request_path"], path);
        assert_eq!(json["data"]["remote_ip"], "127.0.0.1");
        assert_eq!(json["data"]["endpoint"]["id"], "e-log");
        assert_eq!(json["data"]["endpoint"]["method"], "GET");
        assert_eq!(json["data"]["endpoint"]["path_regex"], "/log/(.*)");
        assert_eq!(event.key.as_deref(), Some("partition"));
    }
    assert_ne!(first.json["id"], second.json["id"]);
    wait_until("the produced log events counted", T, || async {
        (dp.metric("rig_request_log_events_total{result=\"produced\"}")
            .await
            == 2.0)
            .then_some(())
    })
    .await;

    let console = std::fs::read_to_string(&stdout).expect("stdout");
    // RIG prints the definition's `proxy.target_url` as written.
    let line = "CALL: [e-log] GET /log/(.*) => 127.0.0.1\n";
    assert_eq!(console.matches(line).count(), 2, "{console}");
    assert!(
        !console.contains("e-secret"),
        "a refused call is not logged: {console}"
    );

    let stderr = dataplane::refused(&[("REQUEST_LOG", "console,syslog")]).await;
    assert!(stderr.contains("REQUEST_LOG"), "{stderr}");
    let stderr = dataplane::refused(&[("REQUEST_LOG", "kafka")]).await;
    assert!(stderr.contains("KAFKA_BROKERS"), "{stderr}");
    let stderr = dataplane::refused(&[
        ("REQUEST_LOG", "kafka"),
        ("KAFKA_BROKERS", "127.0.0.1:9"),
        ("KAFKA_LOG_TOPIC", "bad topic!"),
    ])
    .await;
    assert!(stderr.contains("KAFKA_LOG_TOPIC"), "{stderr}");
}

/// RIG's documented http→kafka combination: an HTTP target with `response_from: kafka`. The
/// backend answers 202 and the response arrives on `PROXY_KAFKA_RESPONSE_TOPICS` with the
/// correlation id the backend was given (`?correlation=`); a backend answering otherwise is
/// passed through at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_target_waits_for_its_response_from_kafka() {
    let env = Env::load().expect("env");
    let responses = topic(&env, "http-kafka-responses", 1).await;
    let (tx, mut correlations) = mpsc::unbounded_channel::<String>();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backend = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        if req.uri().path() == "/direct" {
                            return Ok::<_, Infallible>(Response::new(Full::new(
                                Bytes::from_static(b"direct"),
                            )));
                        }
                        let correlation = req
                            .uri()
                            .query()
                            .and_then(|q| {
                                q.split('&').find_map(|kv| kv.strip_prefix("correlation="))
                            })
                            .unwrap_or_default()
                            .to_owned();
                        let _ = tx.send(correlation);
                        Ok(Response::builder()
                            .status(202)
                            .body(Full::new(Bytes::new()))
                            .expect("response"))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let definitions = json!([{
        "id": "http-kafka", "name": "http-kafka",
        "version_data": {"default": {"endpoints": [
            {"id": "ask", "method": "GET", "path_regex": "/ask", "response_from": "kafka"},
            {"id": "direct", "method": "GET", "path_regex": "/direct", "response_from": "kafka"}
        ]}},
        "proxy": {"target_url": "127.0.0.1", "port": backend.port()}
    }]);
    let config = config(Some(&env), None, "http-kafka", "", &responses)
        .env("PROXY_CONFIG_FILE", definitions.to_string())
        .env("PROXY_KAFKA_RESPONSE_TIMEOUT", "20000");
    let dp = DataPlane::start(config).await.expect("data plane");
    wait_response_partitions(&dp, 1).await;

    let (status, _, body) = {
        let req = client::request(Method::GET, dp.inbound(), "/direct")
            .body(Full::new(Bytes::new()))
            .expect("request");
        client::send(dp.inbound(), req).await.expect("answer")
    };
    assert_eq!((status, text(&body)), (StatusCode::OK, "direct".into()));

    let inbound = dp.inbound();
    let waiting = tokio::spawn(async move {
        let req = client::request(Method::GET, inbound, "/ask")
            .body(Full::new(Bytes::new()))
            .expect("request");
        client::send(inbound, req).await.expect("answer")
    });
    let correlation = tokio::time::timeout(T, correlations.recv())
        .await
        .expect("the backend was called in time")
        .expect("correlation");
    assert!(!correlation.is_empty());
    // Correlation ids are URL-safe (`<pod>.<counter>.<random>`): the query carries them as is.
    respond(
        &producer(&env),
        &responses,
        &correlation,
        "201",
        r#"{"from":"kafka"}"#,
        "9",
    )
    .await;
    let (status, headers, body) = waiting.await.expect("client");
    assert_eq!(status, StatusCode::CREATED, "{}", text(&body));
    assert_eq!(text(&body), r#"{"from":"kafka"}"#);
    assert_eq!(headers["x-request"], "9");
    assert_eq!(headers["access-control-allow-origin"], CORS);
}
