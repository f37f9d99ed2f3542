//! Events reach exactly the right SSE clients: published over HTTP or produced to the real Kafka,
//! filtered by subscriptions, seen by every data-plane process, and resumable without loss.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rig_e2e::dataplane::{DataPlane, DataPlaneConfig};
use rig_e2e::http::form_encode;
use rig_e2e::kafka;
use rig_e2e::sse::{self, SseClient, SseEvent};
use rig_e2e::{Env, http, wait_until};

const T: Duration = Duration::from_secs(30);

fn ce(event_type: &str, id: &str, data: serde_json::Value) -> String {
    serde_json::json!({
        "specversion": "1.0", "type": event_type, "source": "/e2e", "id": id, "data": data
    })
    .to_string()
}

fn subscriptions(value: serde_json::Value) -> String {
    let json = value.to_string();
    form_encode(&json)
}

/// Open an SSE connection and consume the two greeting events.
async fn subscribe(dp: &DataPlane, subs: serde_json::Value) -> (SseClient, String) {
    let path = format!(
        "/_rig/v1/connection/sse?subscriptions={}",
        subscriptions(subs)
    );
    let (client, token, _) = sse::open_greeted(dp.inbound(), &path, &[], T)
        .await
        .expect("SSE connect and greetings");
    (client, token)
}

async fn topic(env: &Env, partitions: i32) -> String {
    kafka::new_topic(env.kafka_brokers().expect("kafka"), "events", partitions)
        .await
        .expect("create topic")
}

fn producer(env: &Env) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", env.kafka_brokers().expect("kafka"))
        .set("acks", "all")
        .create()
        .expect("producer")
}

async fn produce(
    p: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &str,
    headers: Option<OwnedHeaders>,
) {
    let mut record = FutureRecord::to(topic).key(key).payload(payload);
    if let Some(h) = headers {
        record = record.headers(h);
    }
    p.send(record, Duration::from_secs(30))
        .await
        .expect("delivered");
}

async fn kafka_dataplane(env: &Env, topic: &str) -> DataPlane {
    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("KAFKA_BROKERS", env.kafka_brokers().expect("kafka"))
        .env("KAFKA_SOURCE_TOPICS", topic)
        .env(
            "EXTRACTORS",
            r#"{"greeting":{"name":{"stable_field_index":0,"event":{"json_pointer":"/data/name"}}}}"#,
        );
    let dp = DataPlane::start(config).await.expect("data plane");
    wait_partitions(&dp).await;
    dp
}

async fn wait_partitions(dp: &DataPlane) {
    wait_until("partitions assigned", T, || async {
        (dp.metric("rig_kafka_assigned_partitions").await >= 1.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_published_event_reaches_the_subscribed_sse_client_verbatim() {
    let dp = DataPlane::start(DataPlaneConfig::new().expect("ports"))
        .await
        .expect("dp");
    let (mut client, token) = subscribe(&dp, serde_json::json!([{"eventType": "greeting"}])).await;
    assert!(!token.is_empty());
    assert_eq!(
        client.headers["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(client.headers["cache-control"], "no-cache");

    // Pretty-printed with unusual key order: the client must get these exact bytes back.
    let body = "{\n  \"type\": \"greeting\", \"specversion\": \"1.0\",\n  \"source\": \"/e2e\", \"id\": \"g-1\", \"x-extra\": [1, 2]\n}";
    let other = ce("other", "o-1", serde_json::json!({}));
    let (status, _, _) = http::post(
        dp.inbound(),
        "/_rig/v1/events",
        "application/cloudevents+json",
        other,
    )
    .await
    .expect("post");
    assert_eq!(status, 202);
    let (status, headers, _) = http::post(
        dp.inbound(),
        "/_rig/v1/events",
        "application/cloudevents+json",
        body,
    )
    .await
    .expect("post");
    assert_eq!(status, 202);
    assert_eq!(headers["access-control-allow-origin"], "*");

    let got = client.next(T).await.expect("read").expect("event");
    assert_eq!(
        got.event, "greeting",
        "the unsubscribed 'other' event must not arrive first"
    );
    assert_eq!(got.data, body);
    assert!(got.id.is_some(), "every event carries a resume token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_events_are_refused_with_their_status() {
    let dp = DataPlane::start(DataPlaneConfig::new().expect("ports"))
        .await
        .expect("dp");
    let cases: [(&str, &str, u16); 4] = [
        ("application/cloudevents+json", "{not json", 400),
        (
            "application/cloudevents+json",
            r#"{"specversion":"1.0","source":"/x","id":"1"}"#,
            400,
        ),
        ("application/cloudevents-batch", "[]", 415),
        ("application/cloudevents+xml", "<a/>", 415),
    ];
    for (content_type, body, expected) in cases {
        let (status, _, text) = http::post(dp.inbound(), "/_rig/v1/events", content_type, body)
            .await
            .expect("post");
        assert_eq!(status, expected, "{content_type} {body}: {text}");
        assert!(!text.is_empty(), "a refusal says why");
    }
    let big = "x".repeat(2 * 1024 * 1024);
    let (status, _, _) = http::post(
        dp.inbound(),
        "/_rig/v1/events",
        "application/cloudevents+json",
        big,
    )
    .await
    .expect("post");
    assert_eq!(status, 413);
    // Malformed subscriptions on connect.
    let res = sse::connect(
        dp.inbound(),
        "/_rig/v1/connection/sse?subscriptions=%5B%7Bbad",
        &[],
    )
    .await
    .expect("connect");
    match res {
        sse::Connect::Refused(status, _, text) => {
            assert_eq!(status, 400);
            assert!(
                text.starts_with("Failed to decode subscription list"),
                "{text}"
            );
        }
        sse::Connect::Stream(_) => panic!("malformed subscriptions must be refused"),
    }
    // The process is still healthy.
    assert_eq!(
        http::get(dp.internal(), "/health").await.expect("health").0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dataplane_gets_every_kafka_event_and_filters_by_constraints() {
    let env = Env::load().expect("env");
    let topic = topic(&env, 3).await;
    // RIG issue #332: two processes on the same topic must each see 100% of the events.
    let a = kafka_dataplane(&env, &topic).await;
    let b = kafka_dataplane(&env, &topic).await;
    wait_until("all partitions on both", T, || async {
        (a.metric("rig_kafka_assigned_partitions").await >= 3.0
            && b.metric("rig_kafka_assigned_partitions").await >= 3.0)
            .then_some(())
    })
    .await;
    let joe = serde_json::json!([{"eventType": "greeting", "oneOf": [{"name": "joe"}]}]);
    let (mut on_a, _) = subscribe(&a, joe.clone()).await;
    let (mut on_b, _) = subscribe(&b, joe).await;
    let (mut all_b, _) = subscribe(&b, serde_json::json!([{"eventType": "greeting"}])).await;

    let p = producer(&env);
    for i in 0..100 {
        let name = if i % 2 == 0 { "joe" } else { "bob" };
        let key = format!("k{}", i % 5);
        let payload = ce(
            "greeting",
            &format!("e{i}"),
            serde_json::json!({"name": name, "i": i}),
        );
        produce(&p, &topic, &key, &payload, None).await;
    }

    for (label, client, expected) in [
        ("a/joe", &mut on_a, 50),
        ("b/joe", &mut on_b, 50),
        ("b/all", &mut all_b, 100),
    ] {
        let mut got: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let mut count = 0;
        while count < expected {
            let e = client
                .next(T)
                .await
                .expect("read")
                .unwrap_or_else(|| panic!("{label}: stream ended"));
            let v = e.json();
            let i = v["data"]["i"].as_i64().expect("i");
            if expected == 50 {
                assert_eq!(v["data"]["name"], "joe", "{label}: only joe's events");
            }
            got.entry(format!("k{}", i % 5)).or_default().push(i);
            count += 1;
        }
        for (key, values) in &got {
            assert!(
                values.windows(2).all(|w| w[0] < w[1]),
                "{label}: order within key {key}"
            );
        }
    }
    assert_eq!(a.metric("rig_consumed_events_total").await, 100.0);
    assert_eq!(b.metric("rig_consumed_events_total").await, 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_kafka_message_is_skipped_and_counted_binary_and_ce02_work() {
    let env = Env::load().expect("env");
    let topic = topic(&env, 1).await;
    let dp = kafka_dataplane(&env, &topic).await;
    let (mut client, _) = subscribe(&dp, serde_json::json!([{"eventType": "greeting"}])).await;
    let p = producer(&env);
    let v02 =
        serde_json::json!({"specversion": "0.2", "type": "greeting", "source": "/e2e", "id": "a"})
            .to_string();
    produce(&p, &topic, "k", &v02, None).await;
    produce(&p, &topic, "k", "this is not a cloud event", None).await;
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "ce_specversion",
            value: Some("1.0"),
        })
        .insert(Header {
            key: "ce_type",
            value: Some("greeting"),
        })
        .insert(Header {
            key: "ce_source",
            value: Some("/e2e"),
        })
        .insert(Header {
            key: "ce_id",
            value: Some("b"),
        })
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        });
    produce(&p, &topic, "k", r#"{"name":"binary"}"#, Some(headers)).await;

    let first: SseEvent = client.next(T).await.expect("read").expect("event");
    assert_eq!(first.json()["id"], "a");
    assert_eq!(first.data, v02, "structured events arrive as produced");
    let second = client.next(T).await.expect("read").expect("event");
    assert_eq!(second.json()["id"], "b");
    assert_eq!(second.json()["data"]["name"], "binary");
    assert_eq!(dp.metric("rig_consumed_events_failed_total").await, 1.0);
    assert_eq!(dp.metric("rig_consumed_events_total").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_with_last_event_id_gets_exactly_the_missed_events() {
    let dp = DataPlane::start(DataPlaneConfig::new().expect("ports"))
        .await
        .expect("dp");
    let subs = serde_json::json!([{"eventType": "greeting"}]);
    let (mut client, _) = subscribe(&dp, subs.clone()).await;
    let inbound = dp.inbound();
    let post = move |i: i32| {
        let body = ce("greeting", &format!("e{i}"), serde_json::json!({"i": i}));
        async move {
            let (status, _, _) = http::post(
                inbound,
                "/_rig/v1/events",
                "application/cloudevents+json",
                body,
            )
            .await
            .expect("post");
            assert_eq!(status, 202);
        }
    };
    for i in 0..5 {
        post(i).await;
    }
    let mut last = None;
    for i in 0..5 {
        let e = client.next(T).await.expect("read").expect("event");
        assert_eq!(e.json()["data"]["i"], i);
        last = e.id;
    }
    drop(client);
    for i in 5..12 {
        post(i).await;
    }
    let last = last.expect("resume token");
    let path = format!(
        "/_rig/v1/connection/sse?subscriptions={}",
        subscriptions(subs.clone())
    );
    let mut again = sse::open(dp.inbound(), &path, &[("last-event-id", &last)])
        .await
        .expect("reconnect");
    let seen = again
        .until(T, |e| e.json()["data"]["i"] == 11)
        .await
        .expect("missed events");
    let numbers: Vec<i64> = seen
        .iter()
        .filter(|e| e.event == "greeting")
        .map(|e| e.json()["data"]["i"].as_i64().expect("i"))
        .collect();
    assert_eq!(
        numbers,
        (5..12).collect::<Vec<_>>(),
        "exactly the missed events, in order"
    );
    assert!(seen.iter().all(|e| e.event != "rig.connection.gap"));

    // A token the window cannot serve yields a gap event before live events.
    let mut stale = sse::open(dp.inbound(), &path, &[("last-event-id", "garbage")])
        .await
        .expect("connect");
    let seen = stale
        .until(T, |e| e.event == "rig.connection.gap")
        .await
        .expect("gap event");
    assert_eq!(seen.len(), 3, "create, subscriptions_set, gap: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_is_an_or_of_ands_unknown_fields_are_ignored_types_match_exactly() {
    let config = DataPlaneConfig::new().expect("ports").env(
        "EXTRACTORS",
        r#"{"greeting":{"name":{"stable_field_index":0,"event":{"json_pointer":"/data/name"}},
                        "age":{"stable_field_index":1,"event":{"json_pointer":"/data/age"}}}}"#,
    );
    let dp = DataPlane::start(config).await.expect("dp");
    // (name=joe AND age=30) OR (name=ann); `mood` has no extractor, so it is ignored.
    let (mut client, _) = subscribe(
        &dp,
        serde_json::json!([{"eventType": "greeting",
            "oneOf": [{"name": "joe", "age": 30}, {"name": "ann", "mood": "happy"}]}]),
    )
    .await;
    let cases = [
        ("greeting", "joe", serde_json::json!(30), true),
        ("greeting", "joe", serde_json::json!(31), false),
        ("greeting", "joe", serde_json::Value::Null, false),
        ("greeting", "ann", serde_json::json!(99), true),
        ("greeting", "bob", serde_json::json!(30), false),
        ("greeting.v2", "joe", serde_json::json!(30), false),
        ("Greeting", "ann", serde_json::json!(1), false),
    ];
    for (i, (event_type, name, age, _)) in cases.iter().enumerate() {
        let body = ce(
            event_type,
            &format!("c{i}"),
            serde_json::json!({"name": name, "age": age}),
        );
        let (status, _, _) = http::post(
            dp.inbound(),
            "/_rig/v1/events",
            "application/cloudevents+json",
            body,
        )
        .await
        .expect("post");
        assert_eq!(status, 202);
    }
    // A final marker that matches, so everything before it has been decided.
    let marker = ce("greeting", "end", serde_json::json!({"name": "ann"}));
    http::post(
        dp.inbound(),
        "/_rig/v1/events",
        "application/cloudevents+json",
        marker,
    )
    .await
    .expect("post");
    let got = client
        .until(T, |e| e.json()["id"] == "end")
        .await
        .expect("events");
    let ids: Vec<String> = got
        .iter()
        .map(|e| e.json()["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let expected: Vec<String> = cases
        .iter()
        .enumerate()
        .filter(|(_, c)| c.3)
        .map(|(i, _)| format!("c{i}"))
        .chain(std::iter::once("end".to_owned()))
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(dp.metric("rig_subscriptions_total").await, 1.0);
}

/// A bare CR in an event's JSON (legal JSON whitespace) cannot break the SSE framing: a browser's
/// `EventSource` ends a line at CR, LF or CRLF, so the gateway writes every line break as a new
/// `data:` line; the stream carries no CR at all, and the data reassembled by the spec's rules is
/// the event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carriage_return_in_an_event_cannot_break_sse_framing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dp = DataPlane::start(DataPlaneConfig::new().expect("ports"))
        .await
        .expect("start");
    let mut stream = tokio::net::TcpStream::connect(dp.inbound())
        .await
        .expect("connect");
    let subs = form_encode(r#"[{"eventType":"cr.test"}]"#);
    stream
        .write_all(
            format!(
                "GET /_rig/v1/connection/sse?subscriptions={subs} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("request");
    let body = "{\"specversion\":\"1.0\",\r\"type\":\"cr.test\",\r\n\"source\":\"/e2e\",\"id\":\"cr-1\",\r\r\"data\":{\"a\":\"x\"}}";
    let mut raw = Vec::new();
    let mut posted = false;
    let mut buf = [0u8; 4096];
    // Read the response (past its head) until the event's end, publishing once subscribed.
    let events = loop {
        let n = tokio::time::timeout(T, stream.read(&mut buf))
            .await
            .expect("bytes in time")
            .expect("read");
        assert!(n > 0, "stream ended");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).into_owned();
        if !posted && text.contains("rig.subscriptions_set") {
            let (status, _, answer) = http::post(
                dp.inbound(),
                "/_rig/v1/events",
                "application/cloudevents+json",
                body,
            )
            .await
            .expect("post");
            assert_eq!(status, 202, "{answer}");
            posted = true;
        }
        if text.contains("event: cr.test") && text.contains("\"a\":\"x\"}}") {
            break text;
        }
    };
    let head_end = events.find("\r\n\r\n").expect("response head") + 4;
    let stream_bytes = &events[head_end..];
    // Chunked framing uses CRLF around chunks; inside the chunks (the SSE bytes) there is no CR.
    let sse: String = stream_bytes
        .split("\r\n")
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, chunk)| chunk)
        .collect();
    assert!(!sse.contains('\r'), "a CR reached the SSE stream: {sse:?}");
    // Reassemble the event's data as the SSE spec does (lines end at CR, LF or CRLF).
    let block = sse
        .split("\n\n")
        .find(|b| b.contains("event: cr.test"))
        .expect("the event's block");
    let data: Vec<&str> = block
        .split(['\n', '\r'])
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    let json: serde_json::Value = serde_json::from_str(&data.join("\n")).expect("valid JSON");
    assert_eq!(json["data"]["a"], "x");
    assert_eq!(json["id"], "cr-1");
}

/// The gateway's own events come in RIG's format by default (CloudEvents 0.2, `source` `rig`, a
/// UUID v4 `id`, `time` with `+00:00`); `RIG_OWN_EVENTS_SPECVERSION=1.0` switches them to
/// CloudEvents 1.0; another value stops the process at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_events_are_in_rigs_format_unless_configured() {
    let greeting = |dp: &DataPlane| {
        let addr = dp.inbound();
        async move {
            let mut client = sse::open(addr, "/_rig/v1/connection/sse", &[])
                .await
                .expect("connect");
            let create = client.next(T).await.expect("read").expect("greeting");
            assert_eq!(create.event, "rig.connection.create");
            create.json()
        }
    };
    let rig = DataPlane::start(DataPlaneConfig::new().expect("ports"))
        .await
        .expect("start");
    let event = greeting(&rig).await;
    assert_eq!(event["specversion"], "0.2", "{event}");
    assert_eq!(event["source"], "rig");
    let id = event["id"].as_str().expect("id");
    assert!(id.len() == 36 && &id[14..15] == "4", "a UUID v4: {id}");
    assert!(event["time"].as_str().expect("time").ends_with("+00:00"));
    assert!(event["data"]["connection_token"].is_string());

    let new = DataPlane::start(
        DataPlaneConfig::new()
            .expect("ports")
            .env("RIG_OWN_EVENTS_SPECVERSION", "1.0"),
    )
    .await
    .expect("start");
    let event = greeting(&new).await;
    assert_eq!(event["specversion"], "1.0", "{event}");
    assert_eq!(event["source"], "/rig");

    // An unknown version stops the process.
    let stderr = rig_e2e::dataplane::refused(&[("RIG_OWN_EVENTS_SPECVERSION", "0.3")]).await;
    assert!(stderr.contains("RIG_OWN_EVENTS_SPECVERSION"), "{stderr}");
}

/// An event without `source` is accepted and delivered as sent, as RIG does (its issue #191):
/// frontends and backends written for RIG send such events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_without_source_is_accepted_and_delivered_as_rig_does() {
    let dp = DataPlane::start(DataPlaneConfig::new().expect("ports"))
        .await
        .expect("start");
    let (mut client, _) = subscribe(&dp, serde_json::json!([{"eventType": "greeting"}])).await;
    let body = r#"{"specversion":"0.2","type":"greeting","id":"x1"}"#;
    let (status, _, answer) = http::post(
        dp.inbound(),
        "/_rig/v1/events",
        "application/cloudevents+json",
        body,
    )
    .await
    .expect("post");
    assert_eq!(status, 202, "{answer}");
    let event = client
        .until(T, |e| e.event == "greeting")
        .await
        .expect("delivered");
    assert_eq!(event.last().expect("event").data, body, "the bytes as sent");
}

/// RIG puts the request's trace context on its own events: a connect request (SSE, WebSocket)
/// with a valid W3C `traceparent` gets it on `rig.connection.create` and `rig.subscriptions_set`,
/// a subscription update with one on its `rig.subscriptions_set`; without one (or with an invalid
/// one) the events carry none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_events_carry_the_requests_trace_context() {
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const TP2: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let dp = DataPlane::start(DataPlaneConfig::new().expect("ports"))
        .await
        .expect("start");
    let (mut traced, token, _) = sse::open_greeted(
        dp.inbound(),
        "/_rig/v1/connection/sse",
        &[("traceparent", TP)],
        T,
    )
    .await
    .expect("connect");
    // open_greeted consumed the greetings: read them again on a second traced connection.
    let mut second = sse::open(
        dp.inbound(),
        "/_rig/v1/connection/sse",
        &[("traceparent", TP)],
    )
    .await
    .expect("connect");
    for expected in ["rig.connection.create", "rig.subscriptions_set"] {
        let event = second.next(T).await.expect("read").expect("greeting");
        assert_eq!(event.event, expected);
        assert_eq!(event.json()["traceparent"], TP, "{}", event.data);
    }
    for headers in [&[][..], &[("traceparent", "not-a-trace")][..]] {
        let mut plain = sse::open(dp.inbound(), "/_rig/v1/connection/sse", headers)
            .await
            .expect("connect");
        let event = plain.next(T).await.expect("read").expect("greeting");
        assert!(event.json()["traceparent"].is_null(), "{}", event.data);
    }

    // A subscription update's own trace context.
    let req = http::request(
        ::http::Method::PUT,
        dp.inbound(),
        &format!("/_rig/v1/connection/sse/{token}/subscriptions"),
    )
    .header("content-type", "application/json")
    .header("traceparent", TP2)
    .body(http_body_util::Full::new(bytes::Bytes::from(
        r#"{"subscriptions":[{"eventType":"greeting"}]}"#,
    )))
    .expect("request");
    let (status, _, _) = http::send(dp.inbound(), req).await.expect("put");
    assert_eq!(status, 204);
    let set = traced.next(T).await.expect("read").expect("set");
    assert_eq!(set.event, "rig.subscriptions_set");
    assert_eq!(set.json()["traceparent"], TP2, "{}", set.data);

    // WebSocket: the handshake's header.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/_rig/v1/connection/ws",
            dp.inbound()
        ))
        .expect("request");
    request
        .headers_mut()
        .insert("traceparent", TP.parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("ws");
    let frame = tokio::time::timeout(T, futures::StreamExt::next(&mut ws))
        .await
        .expect("frame in time")
        .expect("open")
        .expect("frame");
    let json: serde_json::Value =
        serde_json::from_str(frame.to_text().expect("text")).expect("json");
    assert_eq!(json["type"], "rig.connection.create");
    assert_eq!(json["traceparent"], TP);
}
