//! Server-Sent Events: `GET /_rig/v1/connection/sse?jwt=…&subscriptions=…`.
//!
//! The response is `text/event-stream`; the first two events are `rig.connection.create` (with
//! the connection token) and `rig.subscriptions_set`; then matching events, each with an `id:`
//! resume token; heartbeats come from the shared timer.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;

use super::body::{Encoding, QueueBody};
use super::hub::Outbound;
use super::open::Opened;
use crate::events::frame::SSE_HEARTBEAT;
use crate::http::Body;

/// SSE framing of queued items.
#[derive(Debug, Clone, Copy)]
pub struct SseEncoding;

impl Encoding for SseEncoding {
    fn encode(&self, item: &Outbound) -> Option<Bytes> {
        match item {
            Outbound::Frame(frame) => Some(frame.sse.clone()),
            Outbound::Heartbeat => Some(SSE_HEARTBEAT),
            Outbound::Close(frame) => frame.as_ref().map(|f| f.sse.clone()),
        }
    }
}

/// The streaming response for an opened connection.
pub fn response(opened: Opened, cors: &HeaderValue) -> Response<Body> {
    let body = QueueBody::new(
        opened.registration.rx,
        SseEncoding,
        opened.registration.guard,
    );
    let mut res = Response::new(body.boxed());
    *res.status_mut() = StatusCode::OK;
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, cors.clone());
    // Reverse proxies (nginx) must not buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}
