//! Hygiene: a client that never reads is closed as a slow consumer without disturbing the others,
//! and bad JWTs on connect get their documented answer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rig_e2e::dataplane::{DataPlane, DataPlaneConfig};
use rig_e2e::sse;
use rig_e2e::{http, wait_until};
use tokio::io::AsyncWriteExt;

const T: Duration = Duration::from_secs(60);
const SECRET: &str = "limits-test-secret";

const SUBS: &str = "subscriptions=%5B%7B%22eventType%22%3A%22big%22%7D%5D";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_and_others_get_everything() {
    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("RIG_CONNECTION_QUEUE", "16");
    let dp = DataPlane::start(config).await.expect("start");

    // The stuck client: sends its request, then never reads a byte.
    let mut stuck = tokio::net::TcpStream::connect(dp.inbound())
        .await
        .expect("connect");
    let request = format!(
        "GET /_rig/v1/connection/sse?{SUBS} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n\r\n",
        dp.inbound()
    );
    stuck
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    wait_until("both connections registered", T, || async {
        (dp.metric("rig_connections{transport=\"sse\"}").await >= 1.0).then_some(())
    })
    .await;

    // The healthy client reads concurrently.
    const EVENTS: usize = 300;
    let mut healthy = sse::open(
        dp.inbound(),
        &format!("/_rig/v1/connection/sse?{SUBS}"),
        &[],
    )
    .await
    .expect("healthy client");
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < EVENTS {
            match healthy.next(T).await.expect("read") {
                Some(e) if e.event == "big" => got += 1,
                Some(_) => {}
                None => break,
            }
        }
        got
    });

    // 300 events of 64 KiB: ~19 MiB, far beyond the stuck socket's kernel buffers plus its queue.
    let filler = "x".repeat(64 * 1024);
    for i in 0..EVENTS {
        let body = serde_json::json!({
            "specversion": "1.0", "type": "big", "source": "/e2e", "id": format!("b{i}"),
            "data": {"filler": filler}
        })
        .to_string();
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
    assert_eq!(
        reader.await.expect("reader"),
        EVENTS,
        "the healthy client got every event"
    );
    wait_until("the stuck client is dropped", T, || async {
        (dp.metric("rig_queue_drops_total").await >= 1.0).then_some(())
    })
    .await;
    drop(stuck);
    assert_eq!(
        http::get(dp.internal(), "/health").await.expect("health").0,
        200
    );
}

fn token(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jwts_on_connect_are_refused_and_a_valid_one_is_accepted() {
    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("JWT_SECRET_KEY", SECRET);
    let dp = DataPlane::start(config).await.expect("start");
    let expired = token(serde_json::json!({"exp": now() - 3600, "jti": "a"}));
    let other_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"exp": now() + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret"),
    )
    .expect("sign");
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &serde_json::json!({"exp": now() + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign");
    for (label, jwt) in [
        ("garbage", "not.a.jwt".to_owned()),
        ("expired", expired),
        ("wrong key", other_key),
        ("algorithm not configured", hs512),
    ] {
        match sse::connect(
            dp.inbound(),
            &format!("/_rig/v1/connection/sse?jwt={jwt}"),
            &[],
        )
        .await
        .expect("connect")
        {
            sse::Connect::Refused(status, _, text) => {
                assert_eq!(status, 400, "{label}");
                assert!(text.contains("could not decode JWT"), "{label}: {text}");
            }
            sse::Connect::Stream(_) => panic!("{label}: must be refused"),
        }
    }
    let valid = token(serde_json::json!({"exp": now() + 3600, "jti": "ok"}));
    let mut client = sse::open(
        dp.inbound(),
        &format!("/_rig/v1/connection/sse?jwt={valid}"),
        &[],
    )
    .await
    .expect("a valid token connects");
    let first = client.next(T).await.expect("read").expect("event");
    assert_eq!(first.event, "rig.connection.create");
}

/// A connect attempt from `client` (its address in `x-forwarded-for`) over SSE or long-polling:
/// `Ok(kept connection)` or `Err((status, body))`.
async fn attempt(
    dp: &DataPlane,
    client: &str,
    long_polling: bool,
) -> Result<Option<sse::SseClient>, (u16, String)> {
    let headers = [("x-forwarded-for", client)];
    if long_polling {
        let req = http::request(
            ::http::Method::GET,
            dp.inbound(),
            "/_rig/v1/connection/longpolling",
        )
        .header("x-forwarded-for", format!("203.0.113.99, {client}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
        let (status, _, body) = http::send(dp.inbound(), req).await.expect("send");
        return if status == 200 {
            Ok(None)
        } else {
            Err((status.as_u16(), String::from_utf8_lossy(&body).into_owned()))
        };
    }
    match sse::connect(
        dp.inbound(),
        &format!("/_rig/v1/connection/sse?{SUBS}"),
        &headers,
    )
    .await
    .expect("connect")
    {
        sse::Connect::Stream(client) => Ok(Some(*client)),
        sse::Connect::Refused(status, _, body) => Err((status.as_u16(), body)),
    }
}

/// One client (one address, read from `RIG_CLIENT_IP_HEADER` as behind a proxy) spends at most
/// its share of `MAX_CONNECTIONS_PER_MINUTE`; its refused attempts cost the others nothing, so
/// they still connect until the process's own budget is spent (RIG's answer then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_spend_the_whole_connection_budget() {
    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("MAX_CONNECTIONS_PER_MINUTE", "10")
        .env("RIG_MAX_CONNECTIONS_PER_MINUTE_PER_CLIENT", "3")
        .env("RIG_CLIENT_IP_HEADER", "x-forwarded-for");
    let dp = DataPlane::start(config).await.expect("start");
    let mut kept = Vec::new();
    for n in 0..3 {
        let got = attempt(&dp, "198.51.100.1", n == 2).await;
        kept.push(got.expect("within the client's share"));
    }
    for n in 0..20 {
        let refused = attempt(&dp, "198.51.100.1", n % 2 == 0).await.err();
        let (status, body) = refused.expect("beyond the client's share");
        assert_eq!(status, 429);
        assert_eq!(
            body,
            "Reached maximum number of connections for this client"
        );
    }
    assert_eq!(
        dp.metric("rig_connections_refused_per_client_total").await,
        20.0
    );
    // The process's budget has 7 left, for everyone else.
    for n in 0..7 {
        let got = attempt(&dp, &format!("198.51.100.{}", 10 + n), n % 2 == 1).await;
        kept.push(got.expect("other clients still connect"));
    }
    let (status, body) = attempt(&dp, "198.51.100.200", false)
        .await
        .expect_err("the process's budget is spent");
    assert_eq!(status, 429);
    assert_eq!(body, "Reached maximum number of connections");
}

/// Without `RIG_CLIENT_IP_HEADER` the header is not trusted: a client cannot dodge its share by
/// forging addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarding_headers_are_ignored_unless_configured() {
    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("MAX_CONNECTIONS_PER_MINUTE", "100")
        .env("RIG_MAX_CONNECTIONS_PER_MINUTE_PER_CLIENT", "2");
    let dp = DataPlane::start(config).await.expect("start");
    let mut kept = Vec::new();
    for n in 0..2 {
        let got = attempt(&dp, &format!("192.0.2.{n}"), false).await;
        kept.push(got.expect("within the share"));
    }
    let (status, body) = attempt(&dp, "192.0.2.77", false)
        .await
        .expect_err("the socket's address counts, not the header");
    assert_eq!(status, 429);
    assert_eq!(
        body,
        "Reached maximum number of connections for this client"
    );
}
