//! Real WebSocket and long-polling clients of the data plane's connection endpoints, shared by the
//! tests (the SSE client is [`crate::sse`]). Every wait is bounded by [`T`]; a missed deadline or
//! an unexpected frame fails the test with what was seen.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, StatusCode, header};
use http_body_util::Full;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a client waits for any one thing.
pub const T: Duration = Duration::from_secs(30);
/// The WebSocket endpoint.
pub const WS: &str = "/_rig/v1/connection/ws";
/// The long-polling endpoint.
pub const LP: &str = "/_rig/v1/connection/longpolling";

/// A WebSocket client connection.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Open a WebSocket to `addr` with the connect `query` (asserting the 101).
pub async fn ws_open(addr: SocketAddr, query: &str) -> Ws {
    let url = format!("ws://{addr}{WS}?{query}");
    let (ws, res) = tokio::time::timeout(T, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("WebSocket handshake");
    assert_eq!(res.status(), 101);
    ws
}

/// [`ws_open`], then the greeting: `rig.connection.create` and `rig.subscriptions_set`.
pub async fn ws_subscribed(addr: SocketAddr, query: &str) -> Ws {
    let mut ws = ws_open(addr, query).await;
    assert_eq!(ws_event_type(&mut ws).await, "rig.connection.create");
    assert_eq!(ws_event_type(&mut ws).await, "rig.subscriptions_set");
    ws
}

/// The next message that is not a ping (the client library answers pings itself).
pub async fn ws_next(ws: &mut Ws) -> Message {
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

/// The `type` of the next event (a text frame).
pub async fn ws_event_type(ws: &mut Ws) -> String {
    match ws_next(ws).await {
        Message::Text(text) => {
            let value: Value = serde_json::from_str(text.as_str()).expect("event JSON");
            value["type"].as_str().unwrap_or_default().to_owned()
        }
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The code and reason of the next message, which must be a close frame.
pub async fn ws_close(ws: &mut Ws) -> (u16, String) {
    match ws_next(ws).await {
        Message::Close(Some(frame)) => (u16::from(frame.code), frame.reason.as_str().to_owned()),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// A long-polling client keeping its cookies as a browser would.
#[derive(Debug)]
pub struct Poller {
    addr: SocketAddr,
    path: String,
    jar: BTreeMap<String, String>,
}

impl Poller {
    /// A client of `addr`'s long-polling endpoint with the connect `query`; nothing sent yet.
    pub fn new(addr: SocketAddr, query: &str) -> Self {
        Self {
            addr,
            path: format!("{LP}?{query}"),
            jar: BTreeMap::new(),
        }
    }

    /// [`Poller::new`], the first poll (RIG's `"ok"`), then polls until `rig.subscriptions_set`.
    pub async fn open(addr: SocketAddr, query: &str) -> Self {
        let mut poller = Self::new(addr, query);
        let (status, body) = poller.get().await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "\"ok\""));
        poller.poll_until("rig.subscriptions_set").await;
        poller
    }

    /// One poll with the cookies so far; the status and body (cookies set are kept).
    pub async fn get(&mut self) -> (StatusCode, String) {
        let mut req = crate::http::request(Method::GET, self.addr, &self.path);
        if !self.jar.is_empty() {
            let cookie: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header(header::COOKIE, cookie.join("; "));
        }
        let req = req.body(Full::new(Bytes::new())).expect("request");
        let (status, headers, body) = crate::http::send(self.addr, req).await.expect("GET");
        for set in headers.get_all(header::SET_COOKIE) {
            let pair = set.to_str().unwrap_or_default().split(';').next();
            if let Some((name, value)) = pair.and_then(|p| p.split_once('=')) {
                self.jar
                    .insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Poll until an answer holds an event of `event_type` (deadline-bounded); all types seen.
    pub async fn poll_until(&mut self, event_type: &str) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + T;
        let mut seen = Vec::new();
        loop {
            let (status, body) = self.get().await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let answer: Value = serde_json::from_str(&body).expect("poll JSON");
            for event in answer["events"].as_array().expect("events") {
                seen.push(event["type"].as_str().unwrap_or_default().to_owned());
            }
            if seen.iter().any(|t| t == event_type) {
                return seen;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {event_type} within {T:?}: {seen:?}"
            );
        }
    }
}
