//! The WebSocket transport against the real `rig-dataplane` binary, with a real WebSocket client
//! (tokio-tungstenite): greetings, events as one text frame each with the producer's exact bytes,
//! RIG's close frames, and lossless resume with the last event's CloudEvent `id`.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rig_e2e::dataplane::{DataPlane, DataPlaneConfig};
use rig_e2e::http::form_encode;
use rig_e2e::{http, wait_until};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const T: Duration = Duration::from_secs(30);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn ce(event_type: &str, id: &str, data: serde_json::Value) -> String {
    serde_json::json!({
        "specversion": "1.0", "type": event_type, "source": "/e2e", "id": id, "data": data
    })
    .to_string()
}

fn ws_path(subs: &serde_json::Value, extra: &str) -> String {
    format!(
        "/_rig/v1/connection/ws?subscriptions={}{extra}",
        form_encode(&subs.to_string())
    )
}

async fn connect(dp: &DataPlane, path: &str) -> Ws {
    let url = format!("ws://{}{path}", dp.inbound());
    let (ws, res) = tokio::time::timeout(T, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("WebSocket handshake");
    assert_eq!(res.status(), 101);
    ws
}

/// The next message that is not a ping (the client library answers pings by itself).
async fn next(ws: &mut Ws) -> Message {
    loop {
        let message = tokio::time::timeout(T, ws.next())
            .await
            .expect("a message in time")
            .expect("the stream is open")
            .expect("a valid frame");
        if !matches!(message, Message::Ping(_)) {
            return message;
        }
    }
}

async fn next_json(ws: &mut Ws) -> (String, serde_json::Value) {
    match next(ws).await {
        Message::Text(text) => {
            let value = serde_json::from_str(text.as_str()).expect("event JSON");
            (text.as_str().to_owned(), value)
        }
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The close frame's code and reason.
async fn next_close(ws: &mut Ws) -> (u16, String) {
    match next(ws).await {
        Message::Close(Some(frame)) => (u16::from(frame.code), frame.reason.as_str().to_owned()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Connect and consume the two greetings; returns the socket and the connection token.
async fn subscribe(dp: &DataPlane, subs: &serde_json::Value, extra: &str) -> (Ws, String) {
    let mut ws = connect(dp, &ws_path(subs, extra)).await;
    let (_, create) = next_json(&mut ws).await;
    assert_eq!(create["type"], "rig.connection.create");
    let token = create["data"]["connection_token"]
        .as_str()
        .expect("connection token")
        .to_owned();
    let (_, set) = next_json(&mut ws).await;
    assert_eq!(set["type"], "rig.subscriptions_set");
    (ws, token)
}

async fn publish(dp: &DataPlane, body: impl Into<bytes::Bytes>) {
    let (status, _, text) = http::post(
        dp.inbound(),
        "/_rig/v1/events",
        "application/cloudevents+json",
        body,
    )
    .await
    .expect("post");
    assert_eq!(status, 202, "{text}");
}

async fn ws_connections(dp: &DataPlane) -> f64 {
    let (_, text) = http::get(dp.internal(), "/metrics").await.expect("metrics");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("rig_connections{transport=\"ws\"}")
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(f64::NAN)
}

async fn start() -> DataPlane {
    DataPlane::start(DataPlaneConfig::new().expect("ports"))
        .await
        .expect("data plane")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greetings_then_http_published_events_arrive_as_one_text_frame_with_the_posted_bytes() {
    let dp = start().await;
    let subs = serde_json::json!([{"eventType": "greeting"}]);
    let mut ws = connect(&dp, &ws_path(&subs, "")).await;
    let (_, create) = next_json(&mut ws).await;
    assert_eq!(create["type"], "rig.connection.create");
    assert!(
        create["data"]["connection_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    let (_, set) = next_json(&mut ws).await;
    assert_eq!(set["type"], "rig.subscriptions_set");
    assert_eq!(set["data"][0]["eventType"], "greeting");
    assert_eq!(ws_connections(&dp).await, 1.0);

    publish(&dp, ce("other", "o-1", serde_json::json!({}))).await;
    // Pretty-printed, unusual key order, an extension: the client must get exactly these bytes.
    let body = "{\n  \"type\": \"greeting\", \"specversion\": \"1.0\",\n  \"source\": \"/e2e\", \"id\": \"g-1\", \"x-extra\": [1, 2]\n}";
    publish(&dp, body).await;
    let (text, _) = next_json(&mut ws).await;
    assert_eq!(
        text, body,
        "the unsubscribed 'other' event must not arrive, and the event arrives verbatim"
    );

    // A client ping is answered with a pong carrying the same payload.
    ws.send(Message::Ping(b"still there?".to_vec().into()))
        .await
        .expect("ping");
    match next(&mut ws).await {
        Message::Pong(payload) => assert_eq!(&payload[..], b"still there?"),
        other => panic!("expected a pong, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_text_frame_is_answered_with_rigs_close_frame() {
    let dp = start().await;
    let (mut ws, _) = subscribe(&dp, &serde_json::json!([{"eventType": "greeting"}]), "").await;
    ws.send(Message::text("hello?")).await.expect("send");
    assert_eq!(
        next_close(&mut ws).await,
        (
            1000,
            "This WebSocket endpoint cannot be used for two-way communication.".to_owned()
        )
    );
    // The client library completes the closing handshake; the server then ends the stream.
    let end = tokio::time::timeout(T, ws.next())
        .await
        .expect("end in time");
    assert!(end.is_none() || matches!(end, Some(Err(_))), "{end:?}");
    wait_until("the connection is unregistered", T, || async {
        (ws_connections(&dp).await == 0.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_upgraded_then_closed_with_the_reason() {
    let dp = start().await;
    let mut ws = connect(&dp, "/_rig/v1/connection/ws?subscriptions=%5B%7Bbad").await;
    let (code, reason) = next_close(&mut ws).await;
    assert_eq!(code, 1000);
    assert!(
        reason.starts_with("Failed to decode subscription list: "),
        "{reason}"
    );
    assert!(reason.len() <= 123);

    let mut ws = connect(&dp, "/_rig/v1/connection/ws?jwt=not.a.jwt").await;
    assert_eq!(next_close(&mut ws).await, (1000, "Bad request.".to_owned()));

    // Not a WebSocket handshake: a plain 400 with the reason.
    let (status, text) = http::get(dp.inbound(), "/_rig/v1/connection/ws")
        .await
        .expect("get");
    assert_eq!(status, 400);
    assert!(text.contains("WebSocket upgrade"), "{text}");

    // The connection rate limit.
    let limited = DataPlane::start(
        DataPlaneConfig::new()
            .expect("ports")
            .env("MAX_CONNECTIONS_PER_MINUTE", "1"),
    )
    .await
    .expect("data plane");
    let (_first, _) = subscribe(&limited, &serde_json::json!([]), "").await;
    let mut second = connect(&limited, "/_rig/v1/connection/ws").await;
    assert_eq!(
        next_close(&mut second).await,
        (1000, "Reached maximum number of connections".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_the_last_event_id_gets_exactly_the_missed_events() {
    let dp = start().await;
    let subs = serde_json::json!([{"eventType": "greeting"}]);
    let (mut ws, _) = subscribe(&dp, &subs, "").await;
    for i in 0..5 {
        publish(
            &dp,
            ce("greeting", &format!("e{i}"), serde_json::json!({"i": i})),
        )
        .await;
    }
    let mut last_id = String::new();
    for i in 0..5 {
        let (_, event) = next_json(&mut ws).await;
        assert_eq!(event["data"]["i"], i);
        last_id = event["id"].as_str().expect("id").to_owned();
    }
    drop(ws);
    for i in 5..12 {
        publish(
            &dp,
            ce("greeting", &format!("e{i}"), serde_json::json!({"i": i})),
        )
        .await;
        // Not subscribed: must not be replayed.
        publish(
            &dp,
            ce("other", &format!("o{i}"), serde_json::json!({"i": i})),
        )
        .await;
    }

    let extra = format!("&last_event_id={}", form_encode(&last_id));
    let (mut again, _) = subscribe(&dp, &subs, &extra).await;
    let mut numbers = Vec::new();
    while numbers.len() < 7 {
        let (_, event) = next_json(&mut again).await;
        assert_ne!(
            event["type"], "rig.connection.gap",
            "everything missed is still in the window"
        );
        assert_eq!(event["type"], "greeting");
        numbers.push(event["data"]["i"].as_i64().expect("i"));
    }
    assert_eq!(
        numbers,
        (5..12).collect::<Vec<_>>(),
        "exactly the missed events, in order"
    );
    // Live events follow the replay.
    publish(&dp, ce("greeting", "e12", serde_json::json!({"i": 12}))).await;
    let (_, event) = next_json(&mut again).await;
    assert_eq!(event["data"]["i"], 12);

    // An id the window does not hold: a gap event right after the greetings, then live events.
    let (mut stale, _) = subscribe(&dp, &subs, "&last_event_id=never-seen").await;
    let (_, gap) = next_json(&mut stale).await;
    assert_eq!(gap["type"], "rig.connection.gap");
    publish(&dp, ce("greeting", "e13", serde_json::json!({"i": 13}))).await;
    let (_, event) = next_json(&mut stale).await;
    assert_eq!(event["data"]["i"], 13);
}
