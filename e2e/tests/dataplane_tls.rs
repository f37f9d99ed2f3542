//! The TLS ports (`HTTPS_CERTFILE`, `HTTPS_KEYFILE`, `HTTPS_KEYFILE_PASS`, `INBOUND_HTTPS_PORT`,
//! `API_HTTPS_PORT`), end to end with the real binary and a private CA: the same routes as the
//! plain ports (SSE over HTTP/2 and HTTP/1.1, `wss://`, long-polling, event publishing, the proxy,
//! the internal API), ALPN, a certificate rotated under an open connection, an encrypted key, and
//! the settings RIG refuses.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rig_e2e::dataplane::{self, DataPlane, DataPlaneConfig};
use rig_e2e::pki::{Pki, certificates};
use rig_e2e::{unique_name, wait_until};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(30);

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("rig-tls"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A TLS data plane: its ports and the CA its certificate comes from.
struct Tls {
    dp: DataPlane,
    https: SocketAddr,
    api_https: SocketAddr,
    pki: Pki,
    cert: PathBuf,
    key: PathBuf,
}

/// Start a data plane serving TLS with a fresh certificate `first` (written to `server.pem` /
/// `server.key`, the files it watches), plus `env`.
async fn start(dir: &Path, env: &[(&str, String)]) -> Tls {
    let pki = Pki::new(dir);
    let (pem, key) = pki.issue("first");
    let (cert_file, key_file) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::copy(&pem, &cert_file).expect("copy");
    std::fs::copy(&key, &key_file).expect("copy");
    let (https, api_https) = (
        dataplane::free_addr().expect("port"),
        dataplane::free_addr().expect("port"),
    );
    let mut config = DataPlaneConfig::new()
        .expect("ports")
        .env("HTTPS_CERTFILE", cert_file.to_string_lossy())
        .env("HTTPS_KEYFILE", key_file.to_string_lossy())
        .env("INBOUND_HTTPS_PORT", https.port().to_string())
        .env("API_HTTPS_PORT", api_https.port().to_string());
    for (k, v) in env {
        config = config.env(k, v.clone());
    }
    let dp = DataPlane::start(config).await.expect("start");
    Tls {
        dp,
        https,
        api_https,
        pki,
        cert: cert_file,
        key: key_file,
    }
}

/// A TLS connection to `addr` trusting only `pki`'s CA, offering `alpn`.
async fn connect(pki: &Pki, addr: SocketAddr, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let connector = TlsConnector::from(Arc::new(pki.client_config(alpn)));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(T, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake")
}

/// The ALPN protocol and the leaf certificate the server presented.
fn negotiated(stream: &TlsStream<TcpStream>) -> (Option<Vec<u8>>, Vec<u8>) {
    let (_, conn) = stream.get_ref();
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .expect("a server certificate");
    (conn.alpn_protocol().map(<[u8]>::to_vec), leaf)
}

/// The leaf certificate of a PEM file.
fn leaf(path: &Path) -> Vec<u8> {
    certificates(path)[0].to_vec()
}

/// An HTTP/1.1 client on a new TLS connection (ALPN `http/1.1`).
async fn h1(pki: &Pki, addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tls = connect(pki, addr, &[b"http/1.1"]).await;
    assert_eq!(negotiated(&tls).0.as_deref(), Some(&b"http/1.1"[..]));
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    send
}

/// An HTTP/2 client on a new TLS connection (ALPN `h2`).
async fn h2(pki: &Pki, addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tls = connect(pki, addr, &[b"h2", b"http/1.1"]).await;
    assert_eq!(
        negotiated(&tls).0.as_deref(),
        Some(&b"h2"[..]),
        "h2 preferred"
    );
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    send
}

fn request(method: Method, uri: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request")
}

async fn whole(res: Response<Incoming>) -> (StatusCode, String) {
    let status = res.status();
    let body = tokio::time::timeout(T, res.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Read a streamed body until it contains `needle`; returns everything read.
async fn read_until(body: &mut Incoming, seen: &mut String, needle: &str) {
    while !seen.contains(needle) {
        let frame = tokio::time::timeout(T, body.frame())
            .await
            .unwrap_or_else(|_| panic!("{needle:?} in time; got {seen:?}"))
            .expect("stream open")
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

/// The answer to an SSE connect: 200, read up to the greetings; the stream and what was read.
async fn sse_over(
    answer: impl std::future::Future<Output = Result<Response<Incoming>, hyper::Error>>,
) -> (Incoming, String) {
    let res = answer.await.expect("answer");
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let mut seen = String::new();
    read_until(&mut body, &mut seen, "event: rig.subscriptions_set").await;
    (body, seen)
}

const SUBSCRIBE: &str = "subscriptions=%5B%7B%22eventType%22%3A%22greeting%22%7D%5D";

fn greeting(id: &str) -> String {
    format!(r#"{{"specversion":"1.0","type":"greeting","source":"tls-test","id":"{id}"}}"#)
}

/// Publish over TLS (HTTP/1.1): 202.
async fn publish(pki: &Pki, addr: SocketAddr, id: &str) {
    let mut send = h1(pki, addr).await;
    let res = send
        .send_request(request(Method::POST, "/_rig/v1/events", &greeting(id)))
        .await
        .expect("answer");
    let (status, body) = whole(res).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

/// A backend that answers `backend <path>`.
async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let body = format!("backend {}", req.uri().path());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn proxy_config(backend: SocketAddr) -> String {
    serde_json::json!([{
        "id": "books", "name": "books",
        "version_data": {"default": {"endpoints": [
            {"id": "get", "method": "GET", "path_regex": "/books/(.*)"}
        ]}},
        "proxy": {"target_url": "127.0.0.1", "port": backend.port()}
    }])
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_ports_serve_every_route_over_h2_and_http1() {
    let dir = temp_dir();
    let backend = backend().await;
    let tls = start(&dir, &[("PROXY_CONFIG_FILE", proxy_config(backend))]).await;
    let pki = &tls.pki;

    // The proxy, over HTTP/2 and over HTTP/1.1.
    let mut send = h2(pki, tls.https).await;
    let res = send
        .send_request(request(Method::GET, "https://localhost/books/h2", ""))
        .await
        .expect("answer");
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(
        whole(res).await,
        (StatusCode::OK, "backend /books/h2".into())
    );
    let mut send = h1(pki, tls.https).await;
    let res = send
        .send_request(request(Method::GET, "/books/h1", ""))
        .await
        .expect("answer");
    assert_eq!(
        whole(res).await,
        (StatusCode::OK, "backend /books/h1".into())
    );

    // SSE over HTTP/2 and over HTTP/1.1: the greetings, then an event published over TLS.
    let (mut sse_h2, mut seen_h2) = sse_over(h2(pki, tls.https).await.send_request(request(
        Method::GET,
        &format!("https://localhost/_rig/v1/connection/sse?{SUBSCRIBE}"),
        "",
    )))
    .await;
    assert!(seen_h2.contains("connection_token"), "{seen_h2}");
    let (mut sse_h1, mut seen_h1) = sse_over(h1(pki, tls.https).await.send_request(request(
        Method::GET,
        &format!("/_rig/v1/connection/sse?{SUBSCRIBE}"),
        "",
    )))
    .await;

    // WebSocket over TLS (wss://).
    let stream = connect(pki, tls.https, &[b"http/1.1"]).await;
    let (mut ws, _) = tokio_tungstenite::client_async(
        format!(
            "wss://localhost:{}/_rig/v1/connection/ws?{SUBSCRIBE}",
            tls.https.port()
        ),
        stream,
    )
    .await
    .expect("wss handshake");
    let mut ws_seen = Vec::new();
    while ws_seen.len() < 2 {
        match tokio::time::timeout(T, ws.next())
            .await
            .expect("frame in time")
        {
            Some(Ok(Message::Text(t))) => ws_seen.push(t.to_string()),
            Some(Ok(_)) => {}
            other => panic!("wss closed: {other:?}"),
        }
    }
    assert!(ws_seen[0].contains("rig.connection.create"), "{ws_seen:?}");

    publish(pki, tls.https, "over-tls").await;
    read_until(&mut sse_h2, &mut seen_h2, "over-tls").await;
    read_until(&mut sse_h1, &mut seen_h1, "over-tls").await;
    loop {
        match tokio::time::timeout(T, ws.next())
            .await
            .expect("event in time")
        {
            Some(Ok(Message::Text(t))) if t.contains("over-tls") => break,
            Some(Ok(_)) => {}
            other => panic!("wss closed: {other:?}"),
        }
    }
    let _ = ws.close(None).await;

    // Long-polling over TLS: the session cookie comes back.
    let mut send = h1(pki, tls.https).await;
    let res = send
        .send_request(request(
            Method::GET,
            &format!("/_rig/v1/connection/longpolling?{SUBSCRIBE}"),
            "",
        ))
        .await
        .expect("answer");
    let cookies: Vec<String> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        cookies.iter().any(|c| c.starts_with("connection_token=")),
        "{cookies:?}"
    );

    // The internal API over TLS, both protocols.
    let mut send = h2(pki, tls.api_https).await;
    let res = send
        .send_request(request(Method::GET, "https://localhost/health", ""))
        .await
        .expect("answer");
    assert_eq!(whole(res).await.0, StatusCode::OK);
    let mut send = h1(pki, tls.api_https).await;
    let res = send
        .send_request(request(Method::GET, "/v3/apis/books", ""))
        .await
        .expect("answer");
    let (status, body) = whole(res).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The plain ports stay open (RIG), and a plain-text request to a TLS port gets no answer.
    let (status, _) = rig_e2e::http::get(tls.dp.internal(), "/health")
        .await
        .expect("plain");
    assert_eq!(status, 200);
    assert!(
        rig_e2e::http::get(tls.https, "/_rig/health").await.is_err(),
        "plain HTTP on the TLS port is not served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_to_new_connections_while_open_ones_stay() {
    let dir = temp_dir();
    let tls = start(&dir, &[("RIG_TLS_RELOAD_INTERVAL_MS", "200".into())]).await;
    let pki = &tls.pki;
    let first = leaf(&tls.cert);

    // An SSE connection over TLS with the first certificate.
    let stream = connect(pki, tls.https, &[b"http/1.1"]).await;
    assert_eq!(negotiated(&stream).1, first);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let res = send
        .send_request(request(
            Method::GET,
            &format!("/_rig/v1/connection/sse?{SUBSCRIBE}"),
            "",
        ))
        .await
        .expect("answer");
    let mut open = res.into_body();
    let mut seen = String::new();
    read_until(&mut open, &mut seen, "event: rig.subscriptions_set").await;

    // cert-manager style rotation: new files renamed into place.
    let (pem, key) = pki.issue("second");
    let second = leaf(&pem);
    assert_ne!(first, second);
    for (from, to) in [(&key, &tls.key), (&pem, &tls.cert)] {
        let tmp = to.with_extension("tmp");
        std::fs::copy(from, &tmp).expect("copy");
        std::fs::rename(&tmp, to).expect("rename");
    }
    wait_until("new connections get the rotated certificate", T, || async {
        let stream = connect(pki, tls.https, &[b"http/1.1"]).await;
        (negotiated(&stream).1 == second).then_some(())
    })
    .await;
    assert!(tls.dp.metric("rig_tls_reloads_total{result=\"ok\"}").await >= 1.0);

    // The connection opened before the rotation is still served.
    publish(pki, tls.https, "after-rotation").await;
    read_until(&mut open, &mut seen, "after-rotation").await;

    // Files that cannot be used keep the last good certificate, counted.
    let errors = tls
        .dp
        .metric("rig_tls_reloads_total{result=\"error\"}")
        .await;
    std::fs::write(
        &tls.cert,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    wait_until("the broken certificate is refused", T, || async {
        (tls.dp
            .metric("rig_tls_reloads_total{result=\"error\"}")
            .await
            > errors)
            .then_some(())
    })
    .await;
    let stream = connect(pki, tls.https, &[b"http/1.1"]).await;
    assert_eq!(
        negotiated(&stream).1,
        second,
        "the last good certificate stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_key_needs_its_password_and_unusable_settings_stop_the_process() {
    let dir = temp_dir();
    let pki = Pki::new(&dir);
    let (pem, key) = pki.issue("enc");
    let encrypted = pki.encrypt_key(&key, "s3cret");
    let (pem_s, key_s, enc_s) = (
        pem.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
        encrypted.to_string_lossy().into_owned(),
    );

    // With its password, the encrypted key serves.
    let https = dataplane::free_addr().expect("port");
    let dp = DataPlane::start(
        DataPlaneConfig::new()
            .expect("ports")
            .env("HTTPS_CERTFILE", &pem_s)
            .env("HTTPS_KEYFILE", &enc_s)
            .env("HTTPS_KEYFILE_PASS", "s3cret")
            .env("INBOUND_HTTPS_PORT", https.port().to_string())
            .env(
                "API_HTTPS_PORT",
                dataplane::free_addr().expect("port").port().to_string(),
            ),
    )
    .await
    .expect("start");
    let mut send = h1(&pki, https).await;
    let res = send
        .send_request(request(Method::GET, "/_rig/health", ""))
        .await
        .expect("answer");
    assert_eq!(whole(res).await, (StatusCode::OK, "OK".into()));
    drop(dp);

    // RIG's refusals: one file without the other, a password alone, a missing file.
    let stderr = dataplane::refused(&[("HTTPS_CERTFILE", &pem_s)]).await;
    assert!(stderr.contains("HTTPS_KEYFILE"), "{stderr}");
    let stderr = dataplane::refused(&[("HTTPS_KEYFILE", &key_s)]).await;
    assert!(stderr.contains("HTTPS_CERTFILE"), "{stderr}");
    let stderr = dataplane::refused(&[("HTTPS_KEYFILE_PASS", "x")]).await;
    assert!(stderr.contains("HTTPS_CERTFILE"), "{stderr}");
    let stderr = dataplane::refused(&[
        ("HTTPS_CERTFILE", "/nonexistent.pem"),
        ("HTTPS_KEYFILE", &key_s),
    ])
    .await;
    assert!(stderr.contains("/nonexistent.pem"), "{stderr}");
    // Beyond RIG's checks: files that cannot serve stop the process too.
    let stderr = dataplane::refused(&[("HTTPS_CERTFILE", &pem_s), ("HTTPS_KEYFILE", &enc_s)]).await;
    assert!(stderr.contains("HTTPS_KEYFILE_PASS is not set"), "{stderr}");
    let stderr = dataplane::refused(&[
        ("HTTPS_CERTFILE", &pem_s),
        ("HTTPS_KEYFILE", &enc_s),
        ("HTTPS_KEYFILE_PASS", "wrong"),
    ])
    .await;
    assert!(stderr.contains("cannot be decrypted"), "{stderr}");
    let (_, other_key) = pki.issue("other");
    let stderr = dataplane::refused(&[
        ("HTTPS_CERTFILE", &pem_s),
        ("HTTPS_KEYFILE", &other_key.to_string_lossy()),
    ])
    .await;
    assert!(stderr.contains("does not belong"), "{stderr}");
    let stderr = dataplane::refused(&[("HTTPS_CERTFILE", &key_s), ("HTTPS_KEYFILE", &key_s)]).await;
    assert!(stderr.contains("no certificate"), "{stderr}");
}
