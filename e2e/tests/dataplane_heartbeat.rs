//! Heartbeats come from one shared timer: SSE streams get RIG's `: heartbeat` comment and
//! WebSocket connections get server pings, at `RIG_HEARTBEAT_INTERVAL_MS`.

use std::time::Duration;

use futures::StreamExt;
use rig_e2e::dataplane::{DataPlane, DataPlaneConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(30);

async fn dataplane() -> DataPlane {
    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("RIG_HEARTBEAT_INTERVAL_MS", "200");
    DataPlane::start(config).await.expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_get_heartbeat_comments() {
    let dp = dataplane().await;
    let mut socket = tokio::net::TcpStream::connect(dp.inbound())
        .await
        .expect("connect");
    let request = format!(
        "GET /_rig/v1/connection/sse HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n\r\n",
        dp.inbound()
    );
    socket.write_all(request.as_bytes()).await.expect("request");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let found = tokio::time::timeout(T, async {
        loop {
            let n = socket.read(&mut buf).await.expect("read");
            assert!(n > 0, "stream ended: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(13).any(|w| w == b": heartbeat\n\n") {
                return;
            }
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "no heartbeat in: {}",
        String::from_utf8_lossy(&seen)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_connections_get_server_pings() {
    let dp = dataplane().await;
    let url = format!("ws://{}/_rig/v1/connection/ws", dp.inbound());
    let (mut ws, _) = tokio::time::timeout(T, tokio_tungstenite::connect_async(url))
        .await
        .expect("in time")
        .expect("handshake");
    let ping = tokio::time::timeout(T, async {
        while let Some(message) = ws.next().await {
            if let Message::Ping(_) = message.expect("message") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ping, Ok(true), "a server ping arrives");
}
