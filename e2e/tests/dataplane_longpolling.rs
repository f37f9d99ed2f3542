//! HTTP long-polling against the real data plane: RIG's cookie protocol (`"ok"`, then
//! `{"last_event_id":…,"events":[…]}`), events exactly as published, held polls, refused connects,
//! bad cookies, expiry, lost answers and resume. The client keeps its cookie jar by hand, from the
//! `set-cookie` headers, as a browser would.

use std::collections::BTreeMap;
use std::time::Duration;

use ::http::{HeaderMap, Method, StatusCode, header};
use bytes::Bytes;
use http_body_util::Full;
use rig_e2e::dataplane::{DataPlane, DataPlaneConfig};
use rig_e2e::http::form_encode;
use rig_e2e::{http, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);
const PATH: &str = "/_rig/v1/connection/longpolling";
const CORS: &str = "https://app.example";

/// A data plane with a short hold, so that idle polls come back quickly.
async fn dataplane(extra: &[(&str, &str)]) -> DataPlane {
    let mut config = DataPlaneConfig::new()
        .expect("ports")
        .env("CORS", CORS)
        .env("RIG_LONGPOLLING_HOLD_MS", "300");
    for (k, v) in extra {
        config = config.env(k, *v);
    }
    DataPlane::start(config).await.expect("data plane")
}

fn path_with(subscriptions: &Value) -> String {
    format!(
        "{PATH}?subscriptions={}",
        form_encode(&subscriptions.to_string())
    )
}

/// A long-polling client with a cookie jar.
struct Client {
    addr: std::net::SocketAddr,
    path: String,
    jar: BTreeMap<String, String>,
}

/// One answer: status, headers, body text.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The event types of a poll answer.
    fn types(&self) -> Vec<String> {
        self.json()["events"]
            .as_array()
            .unwrap_or_else(|| panic!("no events: {}", self.body))
            .iter()
            .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl Client {
    fn new(dp: &DataPlane, path: impl Into<String>) -> Self {
        Self {
            addr: dp.inbound(),
            path: path.into(),
            jar: BTreeMap::new(),
        }
    }

    async fn get(&mut self) -> Answer {
        let mut req = http::request(Method::GET, self.addr, &self.path);
        if !self.jar.is_empty() {
            let cookie = self
                .jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            req = req.header(header::COOKIE, cookie);
        }
        let req = req.body(Full::new(Bytes::new())).expect("request");
        let (status, headers, body) = http::send(self.addr, req).await.expect("GET");
        let answer = Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        for set in answer.set_cookies() {
            let pair = set.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                self.jar
                    .insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        answer
    }

    /// Open a session: the first GET must answer `"ok"`.
    async fn connect(&mut self) -> Answer {
        let answer = self.get().await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body, "\"ok\"");
        answer
    }

    /// Poll until the answer holds at least `n` events (deadline-bounded).
    async fn poll_for(&mut self, n: usize) -> Answer {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let answer = self.get().await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
            if answer.types().len() >= n {
                return answer;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {n} events within {T:?}"
            );
        }
    }

    fn cookie(&self, name: &str) -> &str {
        self.jar.get(name).map(String::as_str).unwrap_or_default()
    }
}

async fn publish(dp: &DataPlane, body: &str) {
    let (status, _, text) = http::post(
        dp.inbound(),
        "/_rig/v1/events",
        "application/cloudevents+json",
        body.to_owned(),
    )
    .await
    .expect("publish");
    assert_eq!(status, 202, "{text}");
}

fn ce(event_type: &str, id: &str) -> String {
    json!({"specversion": "1.0", "type": event_type, "source": "/e2e", "id": id, "data": {}})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_get_sets_the_cookies_and_the_first_poll_greets() {
    let dp = dataplane(&[]).await;
    let subs = json!([{"eventType": "greeting"}]);
    let mut client = Client::new(&dp, path_with(&subs));

    let ok = client.connect().await;
    assert_eq!(ok.header("content-type"), "application/json; charset=utf-8");
    assert_eq!(ok.header("cache-control"), "no-cache");
    assert_eq!(ok.header("access-control-allow-origin"), CORS);
    assert_eq!(ok.header("access-control-allow-credentials"), "true");
    let cookies = ok.set_cookies();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    for cookie in &cookies {
        assert!(cookie.contains("; Path=/"), "{cookie}");
        assert!(cookie.contains("; HttpOnly"), "{cookie}");
    }
    assert_eq!(client.cookie("last_event_id"), "first_event");
    let token = client.cookie("connection_token").to_owned();
    assert!(!token.is_empty());

    let first = client.poll_for(2).await;
    assert_eq!(
        first.header("content-type"),
        "application/json; charset=utf-8"
    );
    assert_eq!(first.header("access-control-allow-origin"), CORS);
    assert_eq!(first.header("access-control-allow-credentials"), "true");
    assert_eq!(
        first.types(),
        ["rig.connection.create", "rig.subscriptions_set"]
    );
    let body = first.json();
    assert_eq!(
        body["events"][0]["data"]["connection_token"],
        token.as_str()
    );
    assert_eq!(
        body["events"][1]["data"],
        json!([{"eventType": "greeting", "oneOf": []}])
    );
    assert!(
        body["last_event_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{body}"
    );
    assert_ne!(
        client.cookie("last_event_id"),
        "first_event",
        "the mark moved"
    );
    assert_eq!(client.cookie("connection_token"), token, "same session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_published_event_is_polled_with_exactly_the_posted_bytes() {
    let dp = dataplane(&[]).await;
    let mut client = Client::new(&dp, path_with(&json!([{"eventType": "greeting"}])));
    client.connect().await;
    client.poll_for(2).await;

    // Pretty-printed, unusual key order, an extension: the client must get these exact bytes.
    let posted = "{\n  \"type\": \"greeting\", \"specversion\": \"1.0\",\n  \"source\": \"/e2e\", \"id\": \"lp-1\", \"x-extra\": [1, 2]\n}";
    publish(&dp, &ce("other", "o-1")).await;
    publish(&dp, posted).await;
    let answer = client.poll_for(1).await;
    assert_eq!(answer.types(), ["greeting"], "{}", answer.body);
    let body = answer.json();
    let id = body["last_event_id"].as_str().expect("last_event_id");
    let expected = format!(
        "{{\"last_event_id\":{},\"events\":[{posted}]}}",
        Value::from(id)
    );
    assert_eq!(answer.body, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_with_nothing_pending_answers_an_empty_list() {
    let dp = dataplane(&[]).await;
    let mut client = Client::new(&dp, path_with(&json!([{"eventType": "greeting"}])));
    client.connect().await;
    let greeted = client.poll_for(2).await.json();
    let mark = client.cookie("last_event_id").to_owned();

    let idle = client.get().await;
    assert_eq!(idle.status, StatusCode::OK, "{}", idle.body);
    let body = idle.json();
    assert_eq!(body["events"], json!([]));
    assert_eq!(body["last_event_id"], greeted["last_event_id"]);
    assert_eq!(client.cookie("last_event_id"), mark);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_answered_again_until_acknowledged() {
    let dp = dataplane(&[]).await;
    let mut client = Client::new(&dp, path_with(&json!([{"eventType": "greeting"}])));
    client.connect().await;
    let before = client.jar.clone();
    let first = client.poll_for(2).await;

    // The answer never reached the client: it polls again with its old cookies.
    client.jar = before;
    let again = client.poll_for(2).await;
    assert_eq!(again.body, first.body);

    // Acknowledged (the new cookie): the greetings do not come back.
    publish(&dp, &ce("greeting", "g-1")).await;
    let next = client.poll_for(1).await;
    assert_eq!(next.types(), ["greeting"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connect_parameters_are_refused_with_rigs_texts() {
    let dp = dataplane(&[]).await;
    let mut client = Client::new(&dp, format!("{PATH}?subscriptions=%5Bnot-json"));
    let answer = client.get().await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer
            .body
            .starts_with("Failed to decode subscription list: "),
        "{}",
        answer.body
    );
    assert!(answer.set_cookies().is_empty());

    let mut client = Client::new(&dp, path_with(&json!([{"eventType": ""}])));
    let answer = client.get().await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer.body.starts_with("could not parse subscriptions: "),
        "{}",
        answer.body
    );

    let mut client = Client::new(&dp, format!("{PATH}?jwt=not.a.jwt"));
    let answer = client.get().await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(
        answer.body.starts_with("could not parse subscriptions: "),
        "{}",
        answer.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_rate_limit_answers_429() {
    let dp = dataplane(&[("MAX_CONNECTIONS_PER_MINUTE", "1")]).await;
    Client::new(&dp, PATH).connect().await;
    let answer = Client::new(&dp, PATH).get().await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.body, "Reached maximum number of connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_garbage_cookie_opens_a_fresh_session() {
    let dp = dataplane(&[]).await;
    let mut client = Client::new(&dp, PATH);
    client.connect().await;
    let token = client.cookie("connection_token").to_owned();

    // Flip one character of the token: its MAC no longer matches.
    let mut tampered: Vec<char> = token.chars().collect();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    for bad in [tampered.as_str(), "%%%not-base64", "\"\""] {
        client
            .jar
            .insert("connection_token".to_owned(), bad.to_owned());
        client
            .jar
            .insert("last_event_id".to_owned(), "12345".to_owned());
        let answer = client.connect().await;
        let fresh = client.cookie("connection_token").to_owned();
        assert_ne!(fresh, token, "{answer:?}", answer = answer.body);
        assert_ne!(fresh, bad);
        assert_eq!(client.cookie("last_event_id"), "first_event");
        let first = client.poll_for(2).await;
        assert_eq!(
            first.types(),
            ["rig.connection.create", "rig.subscriptions_set"]
        );
        assert_eq!(first.json()["events"][0]["data"]["connection_token"], fresh);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preflight_allows_credentialed_gets() {
    let dp = dataplane(&[]).await;
    let req = http::request(Method::OPTIONS, dp.inbound(), PATH)
        .header("origin", CORS)
        .header("access-control-request-method", "GET")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, headers, body) = http::send(dp.inbound(), req).await.expect("OPTIONS");
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());
    assert_eq!(headers["access-control-allow-origin"], CORS);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert_eq!(headers["access-control-allow-methods"], "GET");
    assert_eq!(headers["access-control-allow-headers"], "*");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_leaves_and_its_cookie_opens_a_new_one() {
    let dp = dataplane(&[("RIG_LONGPOLLING_SESSION_TIMEOUT_SECS", "1")]).await;
    let mut client = Client::new(&dp, PATH);
    client.connect().await;
    let token = client.cookie("connection_token").to_owned();
    // Not polled any more: the shared sweeper removes it.
    wait_until("the session to expire", T, || async {
        let expired = dp.metric("rig_longpolling_expired_sessions_total").await;
        let open = dp
            .metric("rig_connections{transport=\"longpolling\"}")
            .await;
        (expired >= 1.0 && open == 0.0).then_some(())
    })
    .await;
    client.connect().await;
    assert_ne!(client.cookie("connection_token"), token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_a_new_session_with_what_it_missed() {
    let dp = dataplane(&[]).await;
    let path = path_with(&json!([{"eventType": "greeting"}]));
    let mut client = Client::new(&dp, path.clone());
    client.connect().await;
    client.poll_for(2).await;
    publish(&dp, &ce("greeting", "g-1")).await;
    let seen = client.poll_for(1).await.json();
    let resume = seen["last_event_id"].as_str().expect("token").to_owned();

    // The client goes away; meanwhile an event it would have wanted is published.
    drop(client);
    publish(&dp, &ce("greeting", "g-2")).await;
    let mut back = Client::new(
        &dp,
        format!("{path}&last_event_id={}", form_encode(&resume)),
    );
    back.connect().await;
    let answer = back.poll_for(3).await;
    assert_eq!(
        answer.types(),
        ["rig.connection.create", "rig.subscriptions_set", "greeting"]
    );
    assert_eq!(answer.json()["events"][2]["id"], "g-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_the_oldest_and_the_next_poll_starts_with_a_gap() {
    let dp = dataplane(&[("RIG_LONGPOLLING_BUFFER", "2")]).await;
    let mut client = Client::new(&dp, path_with(&json!([{"eventType": "greeting"}])));
    client.connect().await;
    client.poll_for(2).await;
    for n in 1..=5 {
        publish(&dp, &ce("greeting", &format!("g-{n}"))).await;
    }
    wait_until("three events dropped", T, || async {
        (dp.metric("rig_longpolling_dropped_events_total").await >= 3.0).then_some(())
    })
    .await;
    let answer = client.poll_for(3).await;
    assert_eq!(
        answer.types(),
        ["rig.connection.gap", "greeting", "greeting"]
    );
    let body = answer.json();
    assert_eq!(body["events"][1]["id"], "g-4");
    assert_eq!(body["events"][2]["id"], "g-5");
    // The client acknowledged past the loss: no more gaps.
    publish(&dp, &ce("greeting", "g-6")).await;
    assert_eq!(client.poll_for(1).await.types(), ["greeting"]);
}

/// A long-polling client resuming from a position 500 events back, with a buffer of 200: the
/// missed events wait for room (its polls acknowledge them) instead of pushing the oldest out,
/// so it gets the greetings and all 500, in order, with no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_backlog_larger_than_the_buffer_arrives_whole() {
    let dp = dataplane(&[("RIG_LONGPOLLING_BUFFER", "200")]).await;
    let subs = json!([{"eventType": "lp.resume"}]);
    let query = format!("subscriptions={}", form_encode(&subs.to_string()));
    // The token of the position before every event below (the greeting's).
    publish(&dp, &ce("lp.other", "before")).await;
    let mut probe = rig_e2e::sse::open(
        dp.inbound(),
        &format!("/_rig/v1/connection/sse?{query}"),
        &[],
    )
    .await
    .expect("probe");
    let token = probe
        .next(T)
        .await
        .expect("read")
        .expect("greeting")
        .id
        .expect("token");
    drop(probe);
    for i in 0..500 {
        let body = json!({"specversion": "1.0", "type": "lp.resume", "source": "/e2e", "id": format!("r{i}"), "data": {"i": i}})
            .to_string();
        publish(&dp, &body).await;
    }
    let mut poller = rig_e2e::clients::Poller::new(
        dp.inbound(),
        &format!("{query}&last_event_id={}", form_encode(&token)),
    );
    let (status, body) = poller.get().await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "\"ok\""));
    let mut types = Vec::new();
    let mut numbers = Vec::new();
    let deadline = tokio::time::Instant::now() + 2 * T;
    while numbers.len() < 500 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of 500",
            numbers.len()
        );
        let (status, body) = poller.get().await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let answer: Value = serde_json::from_str(&body).expect("poll JSON");
        for event in answer["events"].as_array().expect("events") {
            let t = event["type"].as_str().unwrap_or_default().to_owned();
            if t == "lp.resume" {
                numbers.push(event["data"]["i"].as_i64().expect("i"));
            }
            types.push(t);
        }
    }
    assert_eq!(
        &types[..2],
        ["rig.connection.create", "rig.subscriptions_set"]
    );
    assert!(
        !types.iter().any(|t| t == "rig.connection.gap"),
        "{types:?}"
    );
    assert_eq!(numbers, (0..500).collect::<Vec<_>>());
}
