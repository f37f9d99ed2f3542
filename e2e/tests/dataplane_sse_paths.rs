//! SSE is served on two paths: a fresh HTTP/1 connection whose first request is the SSE connect
//! goes to the lean direct path; HTTP/2 (prior knowledge) and an SSE request that follows another
//! request on a keep-alive connection go through hyper. Both must behave the same.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rig_e2e::dataplane::{DataPlane, DataPlaneConfig};
use rig_e2e::http;

const T: Duration = Duration::from_secs(30);
const PATH: &str =
    "/_rig/v1/connection/sse?subscriptions=%5B%7B%22eventType%22%3A%22greeting%22%7D%5D";

/// Read the body until `needle` appears (bounded); returns everything read.
async fn read_until(body: &mut hyper::body::Incoming, needle: &str) -> String {
    let mut seen = String::new();
    let found = tokio::time::timeout(T, async {
        while !seen.contains(needle) {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        seen.push_str(&String::from_utf8_lossy(&data));
                    }
                }
                _ => return false,
            }
        }
        true
    })
    .await;
    assert_eq!(found, Ok(true), "{needle:?} not found in: {seen}");
    seen
}

async fn publish(dp: &DataPlane) {
    let body = r#"{"specversion":"1.0","type":"greeting","source":"/e2e","id":"p-1"}"#;
    let (status, _, _) = http::post(
        dp.internal(),
        "/v3/messages",
        "application/cloudevents+json",
        body,
    )
    .await
    .expect("post");
    assert_eq!(status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_over_http2_prior_knowledge() {
    let dp = DataPlane::start(DataPlaneConfig::new().expect("ports"))
        .await
        .expect("start");
    let stream = tokio::net::TcpStream::connect(dp.inbound())
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let uri = format!("http://{}{PATH}", dp.inbound());
    let res = sender
        .send_request(
            http::request(hyper::Method::GET, dp.inbound(), &uri)
                .body(Empty::<Bytes>::new())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let mut body = res.into_body();
    read_until(&mut body, "event: rig.subscriptions_set").await;
    publish(&dp).await;
    let seen = read_until(&mut body, "\"id\":\"p-1\"").await;
    assert!(seen.contains("event: greeting"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_after_another_request_on_a_keep_alive_connection() {
    let dp = DataPlane::start(DataPlaneConfig::new().expect("ports"))
        .await
        .expect("start");
    let stream = tokio::net::TcpStream::connect(dp.inbound())
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let health = sender
        .send_request(
            http::request(hyper::Method::GET, dp.inbound(), "/_rig/health")
                .body(Empty::<Bytes>::new())
                .expect("request"),
        )
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let text = health.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&text[..], b"OK");
    // Same connection: this SSE request is served by hyper, not the direct path. The client
    // connection takes the next request only once it has finished the previous exchange.
    sender
        .ready()
        .await
        .expect("connection ready for the next request");
    let res = sender
        .send_request(
            http::request(hyper::Method::GET, dp.inbound(), PATH)
                .body(Empty::<Bytes>::new())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    read_until(&mut body, "event: rig.subscriptions_set").await;
    publish(&dp).await;
    read_until(&mut body, "\"id\":\"p-1\"").await;
}
