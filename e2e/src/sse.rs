//! A real Server-Sent Events client for tests: HTTP/1.1 over a TCP connection (hyper), parsing the
//! `text/event-stream` format as a browser's `EventSource` does (`id`, `event`, `data` fields,
//! comments ignored, multi-line data joined with `\n`).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One received SSE message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id:` field (the resume token), if any.
    pub id: Option<String>,
    /// The `event:` field (`message` when absent, as in browsers).
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// `data` parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null)
    }
}

/// An open SSE stream.
#[derive(Debug)]
pub struct SseClient {
    /// Response status.
    pub status: http::StatusCode,
    /// Response headers.
    pub headers: http::HeaderMap,
    body: Incoming,
    buffer: BytesMut,
}

/// The answer to a connect attempt: a stream, or a refusal with its body.
#[derive(Debug)]
pub enum Connect {
    /// 200 with an event stream.
    Stream(Box<SseClient>),
    /// Anything else: status, headers and the body text.
    Refused(http::StatusCode, http::HeaderMap, String),
}

/// `GET http://<addr><path_and_query>` with optional extra headers (e.g. `Last-Event-ID`).
pub async fn connect(
    addr: std::net::SocketAddr,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> Result<Connect> {
    let stream = TcpStream::connect(addr).await.context("connecting")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("handshake")?;
    tokio::spawn(conn);
    let mut req = http::Request::get(path_and_query)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::ACCEPT, "text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = sender
        .send_request(req.body(Empty::<Bytes>::new())?)
        .await
        .context("sending the request")?;
    let (parts, body) = res.into_parts();
    if parts.status != http::StatusCode::OK {
        let text = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Ok(Connect::Refused(
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&text).into_owned(),
        ));
    }
    Ok(Connect::Stream(Box::new(SseClient {
        status: parts.status,
        headers: parts.headers,
        body,
        buffer: BytesMut::new(),
    })))
}

/// Like [`connect`], but a refusal is an error.
pub async fn open(
    addr: std::net::SocketAddr,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> Result<SseClient> {
    match connect(addr, path_and_query, headers).await? {
        Connect::Stream(client) => Ok(*client),
        Connect::Refused(status, _, body) => bail!("connect refused: {status} {body}"),
    }
}

/// Like [`open`], then read the two greeting events every connection starts with
/// (`rig.connection.create`, `rig.subscriptions_set`). Returns the client, the connection token and
/// the `data` of `rig.subscriptions_set`.
pub async fn open_greeted(
    addr: std::net::SocketAddr,
    path_and_query: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<(SseClient, String, serde_json::Value)> {
    let mut client = open(addr, path_and_query, headers).await?;
    let create = client
        .next(timeout)
        .await?
        .context("stream ended before rig.connection.create")?;
    if create.event != "rig.connection.create" {
        bail!(
            "first event is {:?}, not rig.connection.create",
            create.event
        );
    }
    let token = create.json()["data"]["connection_token"]
        .as_str()
        .context("rig.connection.create without a connection token")?
        .to_owned();
    let set = client
        .next(timeout)
        .await?
        .context("stream ended before rig.subscriptions_set")?;
    if set.event != "rig.subscriptions_set" {
        bail!("second event is {:?}, not rig.subscriptions_set", set.event);
    }
    let subscriptions = set.json()["data"].clone();
    Ok((client, token, subscriptions))
}

impl SseClient {
    /// The next event, or `None` when the stream ended. Fails after `timeout` without one.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<SseEvent>> {
        tokio::time::timeout(timeout, self.next_inner())
            .await
            .context("no SSE event before the deadline")?
    }

    async fn next_inner(&mut self) -> Result<Option<SseEvent>> {
        loop {
            if let Some(event) = self.take_event() {
                return Ok(Some(event));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(e).context("reading the stream"),
                None => return Ok(None),
            }
        }
    }

    /// Read events until one satisfies `pred` (others are returned too, in order).
    pub async fn until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&SseEvent) -> bool,
    ) -> Result<Vec<SseEvent>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Some(event) => {
                    let done = pred(&event);
                    seen.push(event);
                    if done {
                        return Ok(seen);
                    }
                }
                None => bail!("stream ended after {} events: {seen:?}", seen.len()),
            }
        }
    }

    /// Parse one complete message from the buffer; comment-only blocks (heartbeats) are skipped.
    fn take_event(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.buffer.windows(2).position(|w| w == b"\n\n")?;
            let block = self.buffer.split_to(end);
            self.buffer.advance(2);
            let text = String::from_utf8_lossy(&block);
            let mut event = SseEvent::default();
            let mut data: Vec<&str> = Vec::new();
            let mut any = false;
            for line in text.split('\n') {
                if line.starts_with(':') || line.is_empty() {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                any = true;
                match field {
                    "id" => event.id = Some(value.to_owned()),
                    "event" => event.event = value.to_owned(),
                    "data" => data.push(value),
                    _ => {}
                }
            }
            if any {
                if event.event.is_empty() {
                    event.event = "message".to_owned();
                }
                event.data = data.join("\n");
                return Some(event);
            }
        }
    }
}
