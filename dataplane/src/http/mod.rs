//! HTTP plumbing: the listener loop ([`server`]) and the response helpers every handler shares.
//! The routers are in [`crate::api`].

pub mod server;
pub mod tls;

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

/// A request extension: the request came over TLS (`INBOUND_HTTPS_PORT`, `API_HTTPS_PORT`).
#[derive(Debug, Clone, Copy)]
pub struct Secure;

/// The response body type of every handler: buffered or streamed bytes, never failing.
pub type Body = BoxBody<Bytes, Infallible>;

/// A buffered body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A `text/plain` response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut res = Response::new(full(value.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    res
}

/// Read a whole request body of at most `limit` bytes; beyond it, the 413 answer to send. A body
/// that sends nothing for `idle`, or that is not complete within `4 × idle` (a drip of a byte now
/// and then), is the 408 answer.
pub async fn read_body(
    mut body: hyper::body::Incoming,
    limit: usize,
    idle: std::time::Duration,
) -> Result<Bytes, Response<Body>> {
    let mut out = bytes::BytesMut::new();
    let deadline = tokio::time::Instant::now() + idle.saturating_mul(4);
    loop {
        let wait = idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) => {
                return Err(text(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "Request body stalled: nothing received for {} ms, or not complete within {} ms.",
                        idle.as_millis(),
                        idle.saturating_mul(4).as_millis()
                    ),
                ));
            }
            Ok(None) => return Ok(out.freeze()),
            Ok(Some(Err(error))) => {
                return Err(text(
                    StatusCode::BAD_REQUEST,
                    format!("Could not read the request body: {error}"),
                ));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("Request body too large: the limit is {limit} bytes."),
                ));
            }
            out.extend_from_slice(&data);
        }
    }
}
