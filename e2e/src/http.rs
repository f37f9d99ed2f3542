//! Minimal HTTP/1.1 requests for tests (a fresh connection per request, so nothing is hidden by
//! connection reuse).

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A response: status, headers and the whole body.
pub type Answer = (http::StatusCode, http::HeaderMap, Bytes);

/// Send `req` to `addr` and read the whole response.
pub async fn send(addr: std::net::SocketAddr, req: http::Request<Full<Bytes>>) -> Result<Answer> {
    let stream = TcpStream::connect(addr).await.context("connecting")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let res = sender.send_request(req).await.context("request")?;
    let (parts, body) = res.into_parts();
    let body = body.collect().await.context("reading the body")?.to_bytes();
    Ok((parts.status, parts.headers, body))
}

/// `GET path` → (status, body text).
pub async fn get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    let req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let (status, _, body) = send(addr, req).await?;
    Ok((status.as_u16(), String::from_utf8_lossy(&body).into_owned()))
}

/// A request builder with the `host` header set.
pub fn request(
    method: http::Method,
    addr: std::net::SocketAddr,
    path: &str,
) -> http::request::Builder {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string())
}

/// `POST path` with a body and content type → (status, headers, body text).
pub async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Result<(u16, http::HeaderMap, String)> {
    let req = request(http::Method::POST, addr, path)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))?;
    let (status, headers, body) = send(addr, req).await?;
    Ok((
        status.as_u16(),
        headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// The value on the first `/metrics` line of the process at `addr` that starts with `line_prefix`
/// (a metric name, with its labels when it has some); NaN when no line matches.
pub async fn metric(addr: std::net::SocketAddr, line_prefix: &str) -> f64 {
    let Ok((_, text)) = get(addr, "/metrics").await else {
        return f64::NAN;
    };
    text.lines()
        .find_map(|l| {
            l.strip_prefix(line_prefix)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(f64::NAN)
}

/// Percent-encode `s` for a query-string value (everything but RFC 3986 unreserved characters).
pub fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
