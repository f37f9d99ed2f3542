//! Hostile and unlucky clients on the inbound and internal ports: a socket that sends nothing, a
//! request head dripped slowly (on every path: hyper's, the direct proxy path, the direct SSE
//! path), a kept-alive connection left idle, and a body that stalls are all cut off after their
//! timeout (`RIG_HEAD_TIMEOUT_MS`, `RIG_BODY_IDLE_TIMEOUT_MS`; short here). A client that
//! half-closes after its SSE request still gets its stream.

use std::net::SocketAddr;
use std::time::Duration;

use rig_e2e::dataplane::{DataPlane, DataPlaneConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bounds every wait; the timeouts under test are far shorter.
const T: Duration = Duration::from_secs(20);

async fn dataplane() -> DataPlane {
    let config = DataPlaneConfig::new()
        .expect("ports")
        .env("RIG_HEAD_TIMEOUT_MS", "400")
        .env("RIG_BODY_IDLE_TIMEOUT_MS", "400")
        .env("PROXY_CONFIG_FILE", r#"[{"id":"api","name":"api","version_data":{"default":{"endpoints":[{"id":"x","method":"GET","path_regex":"/x"}]}},"proxy":{"target_url":"127.0.0.1","port":9}}]"#);
    DataPlane::start(config).await.expect("start")
}

/// Everything the server sends until it closes the connection (the test fails if it does not).
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(T, stream.read_to_end(&mut all))
        .await
        .expect("the data plane closes the connection")
        .expect("read");
    String::from_utf8_lossy(&all).into_owned()
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_dripping_clients_are_cut_off() {
    let dp = dataplane().await;
    // Nothing sent at all, on both ports.
    for addr in [dp.inbound(), dp.internal()] {
        let mut silent = connect(addr).await;
        assert_eq!(until_closed(&mut silent).await, "", "{addr}");
    }
    // A head that never ends: hyper's path, the direct proxy path, the direct SSE path.
    for start in [
        "GET /_rig/health HTTP/1.1\r\nhost: x\r\n",
        "GET /x HTTP/1.1\r\nhost: x\r\n",
        "GET /_rig/v1/connection/sse HTTP/1.1\r\nhost: x\r\n",
    ] {
        let mut drip = connect(dp.inbound()).await;
        drip.write_all(start.as_bytes()).await.expect("write");
        let answer = until_closed(&mut drip).await;
        assert!(!answer.starts_with("HTTP/1.1 2"), "{start:?}: {answer}");
    }
    // HTTP/2 (prior knowledge) that never starts a request: a partial preface, a whole one.
    for start in [
        &b"PRI * HTTP/2.0\r\n"[..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
    ] {
        for addr in [dp.inbound(), dp.internal()] {
            let mut h2 = connect(addr).await;
            h2.write_all(start).await.expect("write");
            until_closed(&mut h2).await;
        }
    }
    // A kept-alive connection, idle after its answer.
    let mut idle = connect(dp.inbound()).await;
    idle.write_all(b"GET /_rig/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let answer = until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    dp.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408() {
    let dp = dataplane().await;
    let mut client = connect(dp.inbound()).await;
    client
        .write_all(b"POST /_rig/v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"specv")
        .await
        .expect("write");
    let answer = until_closed(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("Request body stalled"), "{answer}");
    dp.stop().await.expect("stop");
}

/// A body dripped a byte at a time (never idle for the idle timeout) is still bounded: the whole
/// body within four times it, then 408; on the internal API too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dripped_body_gets_408_too() {
    let dp = dataplane().await;
    for (addr, head) in [
        (
            dp.inbound(),
            "POST /_rig/v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n",
        ),
        (
            dp.internal(),
            "POST /v3/apis HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n",
        ),
    ] {
        let (mut read, mut write) = connect(addr).await.into_split();
        write.write_all(head.as_bytes()).await.expect("write");
        let drip = tokio::spawn(async move {
            for _ in 0..999 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                if write.write_all(b" ").await.is_err() {
                    break;
                }
            }
        });
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        tokio::time::timeout(T, async {
            while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
                let n = read.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed without an answer");
                answer.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("an answer while the drip goes on");
        drip.abort();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{addr}: {answer}");
    }
    dp.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_after_its_request_gets_its_stream() {
    let dp = dataplane().await;
    let mut client = connect(dp.inbound()).await;
    client
        .write_all(
            b"GET /_rig/v1/connection/sse HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n",
        )
        .await
        .expect("write");
    client.shutdown().await.expect("half-close");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(T, async {
        while !String::from_utf8_lossy(&got).contains("rig.subscriptions_set") {
            let n = client.read(&mut buf).await.expect("read");
            assert!(n > 0, "the stream ended: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the greetings arrive");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    dp.stop().await.expect("stop");
}

/// Under a low open-files limit, a flood of idle inbound sockets cannot take the file descriptors
/// the internal port needs: the inbound port stays below the limit (new connections beyond its cap
/// are closed at once, and counted), probes keep answering, and the inbound port serves again once
/// the flood is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_flood_leaves_the_internal_port_working() {
    let inbound = rig_e2e::dataplane::free_addr().expect("port");
    let internal = rig_e2e::dataplane::free_addr().expect("port");
    let binary = rig_e2e::dataplane::binary().expect("binary");
    let mut child = tokio::process::Command::new("bash")
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\"")
        .arg(&binary)
        .env("RIG_BIND_ADDRESS", "127.0.0.1")
        .env("INBOUND_PORT", inbound.port().to_string())
        .env("API_HTTP_PORT", internal.port().to_string())
        .env("RIG_HEAD_TIMEOUT_MS", "60000")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    rig_e2e::wait_until("the data plane listens", T, || async {
        let (status, _) = rig_e2e::http::get(internal, "/health").await.ok()?;
        (status == 200).then_some(())
    })
    .await;
    // 400 idle sockets: more than the process may open.
    let mut flood = Vec::new();
    for _ in 0..400 {
        if let Ok(s) = TcpStream::connect(inbound).await {
            flood.push(s);
        }
    }
    rig_e2e::wait_until("connections beyond the cap are shed", T, || async {
        (rig_e2e::http::metric(internal, "rig_inbound_connections_shed_total").await > 0.0)
            .then_some(())
    })
    .await;
    let (status, body) = tokio::time::timeout(T, rig_e2e::http::get(internal, "/health"))
        .await
        .expect("the internal port answers in time during the flood")
        .expect("the internal port answers during the flood");
    assert_eq!((status, body.as_str()), (200, "OK"));
    drop(flood);
    rig_e2e::wait_until("the inbound port serves again", T, || async {
        let (status, _) = rig_e2e::http::get(inbound, "/_rig/health").await.ok()?;
        (status == 200).then_some(())
    })
    .await;
    let _ = child.kill().await;
}
