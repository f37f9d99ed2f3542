//! A real browser's `EventSource` against the data plane: headless Chromium opens a page (served by
//! a tiny HTTP server inside this test) whose script subscribes cross-origin to the data plane's
//! SSE endpoint and reports every event it receives back to the test. Events are produced to the
//! real Kafka. When the data plane restarts, the browser's own reconnect (with `Last-Event-ID`)
//! must deliver what was produced meanwhile exactly once and in order.
//!
//! Chromium comes from `bash e2e/env/chromium.sh install` (`CHROMIUM` in the env file, else
//! `/usr/bin/chromium`). The browser runs in its own process group, killed with the test.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rig_e2e::dataplane::{DataPlane, DataPlaneConfig};
use rig_e2e::http::{self, form_encode};
use rig_e2e::kafka;
use rig_e2e::{Env, unique_name, wait_until};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

/// Deadline of every wait: covers Chromium's start on a loaded 2-core machine and its reconnect
/// delay, yet fails well before a CI job would be killed.
const T: Duration = Duration::from_secs(45);

/// Where the browser's binary is when the env file does not say.
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

/// `EventSource.CLOSED`: the browser will not reconnect by itself any more.
const EVENTSOURCE_CLOSED: u64 = 2;

/// Event types the page listens for; everything it receives is reported to `POST /report`.
const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>rig EventSource</title>
<script>
"use strict";
let seq = 0;
// Reports are numbered when the event happens: fetches may reach the test out of order.
function report(kind, fields) {
  const body = JSON.stringify(Object.assign({ seq: seq++, kind }, fields));
  fetch("/report", { method: "POST", body }).catch((e) => console.error("report failed", e));
}
const es = new EventSource("__SSE_URL__");
es.onopen = () => report("open", { readyState: es.readyState });
es.onerror = () => report("error", { readyState: es.readyState });
for (const type of ["rig.connection.create", "rig.subscriptions_set", "rig.connection.gap", "greeting"]) {
  es.addEventListener(type, (e) => report(type, { data: e.data, lastEventId: e.lastEventId }));
}
</script>
"#;

/// What the page reported, in the order the page saw it.
#[derive(Debug, Clone, Default)]
struct Reports(Arc<Mutex<Vec<serde_json::Value>>>);

impl Reports {
    fn push(&self, report: serde_json::Value) {
        self.0.lock().expect("reports lock").push(report);
    }

    /// All reports sorted by the page's sequence number.
    fn all(&self) -> Vec<serde_json::Value> {
        let mut all = self.0.lock().expect("reports lock").clone();
        all.sort_by_key(|r| r["seq"].as_u64().unwrap_or(u64::MAX));
        all
    }

    fn of_kind(&self, kind: &str) -> Vec<serde_json::Value> {
        self.all()
            .into_iter()
            .filter(|r| r["kind"] == kind)
            .collect()
    }

    /// The data of the `greeting` events received, in order.
    fn greeting_data(&self) -> Vec<String> {
        self.of_kind("greeting")
            .iter()
            .map(|r| r["data"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// CloudEvent ids of the `greeting` events received, in order.
    fn greeting_ids(&self) -> Vec<String> {
        self.of_kind("greeting")
            .iter()
            .map(|r| {
                let data = r["data"].as_str().unwrap_or_default();
                let event: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
                event["id"].as_str().unwrap_or("<no id>").to_owned()
            })
            .collect()
    }
}

/// Serve the page and collect reports on a free 127.0.0.1 port; runs until the test ends.
async fn page_server(page: String, reports: Reports) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let page = Bytes::from(page);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (page, reports) = (page.clone(), reports.clone());
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (page, reports) = (page.clone(), reports.clone());
                async move { Ok::<_, Infallible>(answer(req, page, reports).await) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

async fn answer(req: Request<Incoming>, page: Bytes, reports: Reports) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: Bytes| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(hyper::header::CACHE_CONTROL, "no-store")
            .body(Full::new(body))
            .expect("response")
    };
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/page.html") => reply(StatusCode::OK, "text/html; charset=utf-8", page),
        ("POST", "/report") => {
            let body = match req.into_body().collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => return reply(StatusCode::BAD_REQUEST, "text/plain", Bytes::new()),
            };
            match serde_json::from_slice(&body) {
                Ok(report) => {
                    reports.push(report);
                    reply(StatusCode::NO_CONTENT, "text/plain", Bytes::new())
                }
                Err(_) => reply(StatusCode::BAD_REQUEST, "text/plain", Bytes::new()),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", Bytes::new()),
    }
}

/// Headless Chromium showing one page, in its own process group with its own profile folder.
#[derive(Debug)]
struct Browser {
    child: Child,
    profile: PathBuf,
    log: PathBuf,
}

impl Browser {
    /// Start Chromium on `url` with the flags a closed network needs (no background requests to
    /// Google's hosts, no component updates, no QUIC).
    fn start(binary: &Path, url: &str) -> Self {
        assert!(
            binary.exists(),
            "{} not found: install it with `bash e2e/env/chromium.sh install`",
            binary.display()
        );
        let profile = std::env::temp_dir().join(unique_name("rig-chromium"));
        std::fs::create_dir_all(&profile).expect("profile folder");
        let log = profile.join("chromium.log");
        let stderr = std::fs::File::create(&log).expect("chromium log");
        let stdout = stderr.try_clone().expect("chromium log");
        let child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Self {
            child,
            profile,
            log,
        }
    }

    /// Panic with Chromium's output if it has exited: a dead browser must fail the test at once,
    /// not let it wait for reports until the deadline.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let output = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = output.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "chromium exited early ({status}); last lines of its output:\n{}",
                tail.join("\n")
            );
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The browser's helper processes (zygote, renderer, network service) share its group.
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Poll `check` against the reports until it holds. Fails at once if the browser died, its
/// EventSource gave up, or a gap was announced (nothing here may be missing); on timeout the
/// message shows everything the page reported.
async fn wait_for_page<V>(
    what: &str,
    browser: &mut Browser,
    reports: &Reports,
    check: impl Fn(&Reports) -> Option<V>,
) -> V {
    let polling = wait_until(what, T + Duration::from_secs(5), || {
        browser.assert_running();
        let all = reports.all();
        let closed = all
            .iter()
            .any(|r| r["kind"] == "error" && r["readyState"] == EVENTSOURCE_CLOSED);
        assert!(
            !closed,
            "the page's EventSource gave up (readyState CLOSED) while waiting for {what}: {all:#?}"
        );
        assert!(
            !all.iter().any(|r| r["kind"] == "rig.connection.gap"),
            "the data plane announced a gap while waiting for {what}: {all:#?}"
        );
        let got = check(reports);
        async move { got }
    });
    match tokio::time::timeout(T, polling).await {
        Ok(value) => value,
        Err(_) => panic!(
            "timed out after {T:?} waiting for {what}; the page reported: {:#?}",
            reports.all()
        ),
    }
}

fn chromium(env: &Env) -> PathBuf {
    env.get("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(DEFAULT_CHROMIUM))
}

async fn wait_partitions(dp: &DataPlane) {
    wait_until("partitions assigned", T, || async {
        (dp.metric("rig_kafka_assigned_partitions").await >= 1.0).then_some(())
    })
    .await;
}

async fn create_topic(brokers: &str) -> String {
    kafka::new_topic(brokers, "browser", 1)
        .await
        .expect("create topic")
}

/// Produce a `greeting` CloudEvent with CloudEvent id `id`; returns the record's value.
async fn produce_greeting(producer: &FutureProducer, topic: &str, id: &str) -> String {
    let payload = serde_json::json!({
        "specversion": "1.0", "type": "greeting", "source": "/e2e", "id": id,
        "data": {"hello": id}
    })
    .to_string();
    producer
        .send(
            FutureRecord::to(topic).key("k").payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .expect("delivered");
    payload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_eventsource_receives_kafka_events_and_resumes_across_a_restart() {
    let env = Env::load().expect("env");
    let brokers = env.kafka_brokers().expect("kafka").to_owned();
    let topic = create_topic(&brokers).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("acks", "all")
        .create()
        .expect("producer");

    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("KAFKA_BROKERS", &brokers)
        .env("KAFKA_SOURCE_TOPICS", &topic)
        // Resume tokens are signed: the restarted process must share the key (as pods do).
        .env("RIG_TOKEN_KEY", "browser-test-token-key-0123456789");
    let dp = DataPlane::start(config).await.expect("data plane");
    wait_partitions(&dp).await;

    let subscriptions = form_encode(r#"[{"eventType":"greeting"}]"#);
    let sse_url = format!(
        "http://{}/_rig/v1/connection/sse?subscriptions={subscriptions}",
        dp.inbound()
    );
    let reports = Reports::default();
    let page_addr = page_server(PAGE.replace("__SSE_URL__", &sse_url), reports.clone()).await;
    let mut browser = Browser::start(&chromium(&env), &format!("http://{page_addr}/page.html"));

    // The page's EventSource is registered once its greeting arrived.
    wait_for_page(
        "the page's EventSource to receive rig.connection.create",
        &mut browser,
        &reports,
        |r| (!r.of_kind("rig.connection.create").is_empty()).then_some(()),
    )
    .await;
    let g1 = produce_greeting(&producer, &topic, "g-1").await;
    wait_for_page("greeting g-1 in the page", &mut browser, &reports, |r| {
        (!r.greeting_ids().is_empty()).then_some(())
    })
    .await;
    assert_eq!(reports.greeting_ids(), ["g-1"]);
    let first = &reports.of_kind("greeting")[0];
    assert!(
        first["lastEventId"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "EventSource keeps the event's resume token: {first}"
    );

    // Restart on the same ports: g-2 is produced while nothing consumes (it can only come from
    // Kafka history), g-3 once the new process reads the topic.
    let config = dp.stop().await.expect("stop");
    let g2 = produce_greeting(&producer, &topic, "g-2").await;
    let dp = DataPlane::start(config).await.expect("restart");
    wait_partitions(&dp).await;
    let g3 = produce_greeting(&producer, &topic, "g-3").await;
    wait_for_page(
        "greetings g-2 and g-3 in the page",
        &mut browser,
        &reports,
        |r| (r.greeting_ids().len() >= 3).then_some(()),
    )
    .await;
    // A sentinel behind them on the same partition and connection: anything duplicated would
    // arrive before it.
    let g4 = produce_greeting(&producer, &topic, "g-4").await;
    wait_for_page("greeting g-4 in the page", &mut browser, &reports, |r| {
        (r.greeting_ids().len() >= 4).then_some(())
    })
    .await;
    browser.assert_running();

    let all = reports.all();
    assert_eq!(
        reports.greeting_ids(),
        ["g-1", "g-2", "g-3", "g-4"],
        "each event exactly once, in order; the page saw: {all:#?}"
    );
    assert_eq!(
        reports.greeting_data(),
        [g1, g2, g3, g4],
        "the page got the records' values verbatim"
    );
    assert!(
        reports.of_kind("rig.connection.gap").is_empty(),
        "nothing was missing, so no gap event: {all:#?}"
    );
    assert!(
        reports.of_kind("rig.connection.create").len() >= 2,
        "the browser reconnected by itself: {all:#?}"
    );
    assert!(
        reports
            .of_kind("error")
            .iter()
            .all(|r| r["readyState"] != EVENTSOURCE_CLOSED),
        "EventSource never gave up (readyState CLOSED): {all:#?}"
    );
    // The new process served the reconnect from the resume token the browser sent.
    assert!(
        dp.metric("rig_replay_hits_total").await >= 1.0,
        "the reconnect carried Last-Event-ID and was replayed without a gap"
    );
}

/// A frontend written for RIG, unchanged: it connects without subscriptions, takes the
/// connection token from `rig.connection.create`, `PUT`s its subscriptions cross-origin (a CORS
/// preflight first), and receives events — once with `EventSource`, once with a `WebSocket`.
const RIG_FLOW_PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>rig frontend flow</title>
<script>
"use strict";
const BASE = "__BASE__";
let seq = 0;
function report(kind, fields) {
  const body = JSON.stringify(Object.assign({ seq: seq++, kind }, fields));
  fetch("/report", { method: "POST", body }).catch((e) => console.error("report failed", e));
}
async function subscribe(transport, token) {
  const res = await fetch(`${BASE}/_rig/v1/connection/${transport}/${token}/subscriptions`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ subscriptions: [{ eventType: "greeting" }] }),
  });
  report(`${transport}:put`, { status: res.status });
}
const es = new EventSource(`${BASE}/_rig/v1/connection/sse`);
es.addEventListener("rig.connection.create", (e) => {
  const event = JSON.parse(e.data);
  report("sse:rig.connection.create", { data: e.data });
  subscribe("sse", event.data.connection_token).catch((err) => report("sse:put-failed", { error: String(err) }));
});
for (const type of ["rig.subscriptions_set", "greeting"]) {
  es.addEventListener(type, (e) => report(`sse:${type}`, { data: e.data }));
}
es.onerror = () => report("sse:error", { readyState: es.readyState });
const ws = new WebSocket(`${BASE.replace("http", "ws")}/_rig/v1/connection/ws`);
ws.onmessage = (m) => {
  const event = JSON.parse(m.data);
  report(`ws:${event.type}`, { data: m.data });
  if (event.type === "rig.connection.create") {
    subscribe("ws", event.data.connection_token).catch((err) => report("ws:put-failed", { error: String(err) }));
  }
};
ws.onclose = (e) => report("ws:close", { code: e.code });
</script>
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rig_frontend_flow_works_unchanged_over_eventsource_and_websocket() {
    let env = Env::load().expect("env");
    let dp = DataPlane::start(DataPlaneConfig::new().expect("ports"))
        .await
        .expect("data plane");
    let base = format!("http://{}", dp.inbound());
    let reports = Reports::default();
    let page_addr = page_server(RIG_FLOW_PAGE.replace("__BASE__", &base), reports.clone()).await;
    let mut browser = Browser::start(&chromium(&env), &format!("http://{page_addr}/page.html"));

    // Each transport: create, the PUT answered 204, then the new set naming `greeting`.
    for transport in ["sse", "ws"] {
        wait_for_page(
            &format!("{transport}: the subscription set after the PUT"),
            &mut browser,
            &reports,
            |r| {
                r.of_kind(&format!("{transport}:rig.subscriptions_set"))
                    .iter()
                    .any(|s| s["data"].as_str().is_some_and(|d| d.contains("greeting")))
                    .then_some(())
            },
        )
        .await;
        let puts = reports.of_kind(&format!("{transport}:put"));
        assert_eq!(puts.len(), 1, "{:#?}", reports.all());
        assert_eq!(puts[0]["status"], 204, "{:#?}", reports.all());
        let create = &reports.of_kind(&format!("{transport}:rig.connection.create"))[0];
        let create: serde_json::Value =
            serde_json::from_str(create["data"].as_str().unwrap_or_default()).expect("JSON");
        assert_eq!(create["specversion"], "0.2", "RIG's format: {create}");
        assert_eq!(create["source"], "rig");
    }

    let event = r#"{"specversion":"0.2","type":"greeting","source":"backend","id":"flow-1","data":{"hi":1}}"#;
    let (status, _, answer) = http::post(
        dp.inbound(),
        "/_rig/v1/events",
        "application/cloudevents+json",
        event,
    )
    .await
    .expect("post");
    assert_eq!(status, 202, "{answer}");
    for transport in ["sse", "ws"] {
        let kind = format!("{transport}:greeting");
        wait_for_page(
            &format!("{kind} in the page"),
            &mut browser,
            &reports,
            |r| (!r.of_kind(&kind).is_empty()).then_some(()),
        )
        .await;
        let got = reports.of_kind(&kind);
        assert_eq!(got.len(), 1, "{:#?}", reports.all());
        assert_eq!(got[0]["data"], event, "delivered as sent");
    }
    assert!(
        reports.of_kind("ws:close").is_empty() && reports.of_kind("sse:put-failed").is_empty(),
        "{:#?}",
        reports.all()
    );
    browser.assert_running();
}
