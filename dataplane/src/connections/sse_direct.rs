//! SSE served directly on the TCP connection, without hyper: `GET /_rig/v1/connection/sse` as
//! the first request of an HTTP/1.x connection.
//!
//! **Why.** hyper keeps an HTTP/1 connection's read buffer (8 KiB, growing to 16 KiB) and its
//! write buffer (8 KiB, not configurable below that) for as long as a response streams, which is
//! the whole life of an SSE connection. Served here, an idle connection holds one task, the
//! registration and a 16-byte read buffer; frames are written with vectored writes of the
//! event's shared `Bytes` (no copy), like the WebSocket transport.
//!
//! **What is taken over.** The inbound listener peeks at the first bytes of a new connection
//! ([`sniff`]); only a request line starting `GET /_rig/v1/connection/sse` followed by `?` or a
//! space is served here. Everything else (other paths, HTTP/2, origin-form variations) goes to
//! hyper with the peeked bytes still unread; so does an SSE request that arrives later on a
//! keep-alive connection ([`super::sse::response`] serves those, and HTTP/2).
//!
//! **Behaviour.** The same as the hyper path: the request head (at most [`MAX_HEAD`] bytes, else
//! 431; malformed, or not HTTP/1.x, 400) gives the query parameters and the `Last-Event-ID`
//! header (which wins over the `last_event_id` parameter); a refused connection gets RIG's status
//! and message as `text/plain` and the connection is closed. An accepted one gets `200` with the
//! response head of [`super::sse::response`] and `transfer-encoding: chunked` (HTTP/1.0 clients:
//! no chunking, the end of the stream is the end of the connection), then the queue exactly as
//! [`super::body::QueueBody`] with [`SseEncoding`] writes it: everything already queued goes out
//! as one chunk, a close frame ends the stream after its frame, and the stream ends with the last
//! chunk when the hub drops the connection. The connection is closed after the stream (no
//! keep-alive). A client that goes away (end of stream or error on read) unregisters the
//! connection; bytes the client sends after the head are read and ignored. A client that accepts
//! no bytes for 30 s is dropped.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::batch::{BATCH_BYTES, BATCH_FRAMES, with_timeout, write_slices};
use super::body::Encoding;
use super::context::Connections;
use super::feed::Feed;
use super::hub::{Outbound, Registration};
use super::open::{self, ConnectParams};
use super::sse::SseEncoding;
use crate::metrics::Transport;

/// The start of a request line this module serves.
const REQUEST_PREFIX: &[u8] = b"GET /_rig/v1/connection/sse";

/// The largest request head read; a bigger one gets 431.
pub const MAX_HEAD: usize = 16 * 1024;

/// The most header fields a request head may have; more get 431.
const MAX_HEADERS: usize = 64;

/// When the first bytes are a strict prefix of [`REQUEST_PREFIX`], look again this often, this
/// many times, before leaving the connection to hyper.
const PEEK_PAUSE: Duration = Duration::from_millis(10);
const PEEK_ATTEMPTS: usize = 50;

/// After a refusal, how long (and how many bytes) unread request bytes are drained so that
/// closing does not reset the connection before the client read the answer.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// Whether a connection starting with `bytes` is an SSE connect request; `None` when more bytes
/// are needed to tell.
fn classify(bytes: &[u8]) -> Option<bool> {
    let n = bytes.len().min(REQUEST_PREFIX.len());
    if bytes[..n] != REQUEST_PREFIX[..n] {
        return Some(false);
    }
    match bytes.get(REQUEST_PREFIX.len()) {
        None => None,
        Some(b'?' | b' ') => Some(true),
        Some(_) => Some(false),
    }
}

/// Whether the connection's first request is an SSE connect request; reads nothing (peeks).
pub async fn sniff(stream: &TcpStream) -> bool {
    let mut buf = [0u8; REQUEST_PREFIX.len() + 1];
    for _ in 0..PEEK_ATTEMPTS {
        let n = match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        match classify(&buf[..n]) {
            Some(sse) => return sse,
            // A request line split across packets: wait for the rest (rare; bounded).
            None => tokio::time::sleep(PEEK_PAUSE).await,
        }
    }
    false
}

/// Serve an SSE connect request on `stream` (after [`sniff`] said it is one) until the stream ends
/// or the client goes away.
pub async fn serve(conns: &Arc<Connections>, stream: TcpStream) {
    let peer = stream.peer_addr().ok();
    serve_io(conns, stream, peer).await;
}

async fn serve_io<IO>(conns: &Arc<Connections>, mut io: IO, peer: Option<std::net::SocketAddr>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let client_header = conns.settings.client_ip_header.as_ref();
    let Some(mut head) = read_or_refuse(&mut io, conns.settings.head_timeout, client_header).await
    else {
        return;
    };
    head.params.client =
        peer.map(|peer| super::limit::Client::from_header(peer, head.client_value.as_deref()));
    // Boxed: the connect checks' state lives on the heap only while they run.
    let opened = Box::pin(open::open_resumed(conns, Transport::Sse, &head.params)).await;
    let registration = match opened {
        Ok(opened) => opened.registration,
        Err(refused) => {
            refuse(&mut io, refused.status, &refused.message).await;
            return;
        }
    };
    let chunked = !head.http10;
    let response_head = ok_head(conns.cors.as_bytes(), chunked);
    if let Err(error) = with_timeout(async {
        io.write_all(&response_head).await?;
        io.flush().await
    })
    .await
    {
        tracing::debug!(%error, "SSE connection ended before its response head");
        return;
    }
    drop(response_head);
    match stream(&mut io, registration, chunked).await {
        Ok(()) => {
            let _ = with_timeout(io.shutdown()).await;
        }
        Err(error) => tracing::debug!(%error, "SSE connection ended"),
    }
}

/// What the request head says.
#[derive(Debug)]
struct Head {
    /// The connect parameters (query, `Last-Event-ID`).
    params: ConnectParams,
    /// An HTTP/1.0 request (no chunked encoding).
    http10: bool,
    /// The last value of `RIG_CLIENT_IP_HEADER`, when configured and sent.
    client_value: Option<Vec<u8>>,
}

/// Why a request head is refused.
#[derive(Debug, thiserror::Error)]
enum HeadError {
    /// Bigger than [`MAX_HEAD`] or more than [`MAX_HEADERS`] fields.
    #[error("Request header fields too large.")]
    TooLarge,
    /// Not a well-formed HTTP/1.x `GET /_rig/v1/connection/sse` head.
    #[error("Bad request: {0}.")]
    Bad(String),
    /// The client went away or sent nothing in time.
    #[error("reading the request head failed: {0}")]
    Io(#[from] io::Error),
}

/// Read the request head; on a bad head, answer 400/431 and return `None`.
async fn read_or_refuse<IO>(
    io: &mut IO,
    timeout: Duration,
    client_header: Option<&http::HeaderName>,
) -> Option<Head>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let read = match tokio::time::timeout(timeout, read_head(io, client_header)).await {
        Ok(read) => read,
        Err(_) => Err(HeadError::Io(io::ErrorKind::TimedOut.into())),
    };
    match read {
        Ok(head) => Some(head),
        Err(HeadError::Io(error)) => {
            tracing::debug!(%error, "SSE request head not received");
            None
        }
        Err(error) => {
            let status = match error {
                HeadError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            tracing::info!(%error, "refused an SSE request head");
            refuse(io, status, &error.to_string()).await;
            None
        }
    }
}

/// Read bytes until the request head is complete (at most [`MAX_HEAD`]) and parse it.
async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    client_header: Option<&http::HeaderName>,
) -> Result<Head, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        if buf.len() == buf.capacity() {
            buf.reserve((buf.capacity()).min(MAX_HEAD - buf.len()));
        }
        let n = io.read_buf(&mut buf).await?;
        if n == 0 {
            return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        // Only the first `MAX_HEAD` bytes count as the head.
        let len = buf.len().min(MAX_HEAD);
        if let Some(head) = parse_head(&buf[..len], client_header)? {
            return Ok(head);
        }
    }
}

/// Parse a request head: `None` while incomplete.
fn parse_head(
    bytes: &[u8],
    client_header: Option<&http::HeaderName>,
) -> Result<Option<Head>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(error) => return Err(HeadError::Bad(error.to_string())),
    }
    if req.method != Some("GET") {
        return Err(HeadError::Bad("not a GET request".to_owned()));
    }
    let target = req.path.unwrap_or_default();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    if path != "/_rig/v1/connection/sse" {
        return Err(HeadError::Bad("unexpected path".to_owned()));
    }
    let http10 = match req.version {
        Some(0) => true,
        Some(1) => false,
        _ => return Err(HeadError::Bad("unsupported HTTP version".to_owned())),
    };
    let mut params = ConnectParams::from_query(query);
    if let Some(id) = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("last-event-id"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
    {
        params.last_event_id = Some(id.to_owned());
    }
    params.trace(
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("traceparent"))
            .map(|h| h.value),
    );
    // The last value of the client-address header, when one is configured.
    let client_value = client_header.and_then(|name| {
        req.headers
            .iter()
            .rfind(|h| h.name.eq_ignore_ascii_case(name.as_str()))
            .map(|h| h.value.to_vec())
    });
    Ok(Some(Head {
        params,
        http10,
        client_value,
    }))
}

/// Answer with `status` and `message` as plain text, then close the connection.
async fn refuse<IO>(io: &mut IO, status: StatusCode, message: &str)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let answer = plain_response(status, message);
    let written = with_timeout(async {
        io.write_all(&answer).await?;
        io.flush().await?;
        io.shutdown().await
    })
    .await;
    if written.is_err() {
        return;
    }
    // Drain what the client still sends (bounded), so closing does not reset the connection
    // before the client read the answer.
    let _ = tokio::time::timeout(LINGER, async {
        let mut scratch = [0u8; 512];
        let mut total = 0;
        while total < LINGER_BYTES {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// A complete plain-text HTTP/1.1 response that closes the connection.
fn plain_response(status: StatusCode, message: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{message}",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        message.len(),
    )
    .into_bytes()
}

/// The head of an accepted SSE response (the headers of [`super::sse::response`]).
fn ok_head(cors: &[u8], chunked: bool) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n\
          cache-control: no-cache\r\naccess-control-allow-origin: ",
    );
    head.extend_from_slice(cors);
    head.extend_from_slice(b"\r\nx-accel-buffering: no\r\n");
    if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    } else {
        head.extend_from_slice(b"connection: close\r\n\r\n");
    }
    head
}

/// Forward the queue until it ends (`Ok`: the stream was finished) or the client goes away. The
/// registration is dropped (the connection unregistered) on return.
async fn stream<IO>(io: &mut IO, registration: Registration, chunked: bool) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let Registration { mut rx, guard, .. } = registration;
    let _guard = guard;
    let mut scratch = [0u8; 16];
    // A client that half-closed after its request still gets its stream; a client that is gone
    // makes a write fail (at the latest with the next heartbeat).
    let mut half_closed = false;
    loop {
        tokio::select! {
            item = rx.recv() => {
                let Some(item) = item else {
                    // The hub dropped the connection: end the stream.
                    return with_timeout(Batch::default().write_to(io, chunked, true)).await;
                };
                let (batch, last) = collect(item, &mut rx);
                with_timeout(batch.write_to(io, chunked, last)).await?;
                if last {
                    return Ok(());
                }
            }
            read = io.read(&mut scratch), if !half_closed => {
                if read? == 0 {
                    half_closed = true;
                }
            }
        }
    }
}

/// `first` and everything already queued behind it (bounded); `true` when a close ends the stream.
fn collect(first: Outbound, rx: &mut Feed) -> (Batch, bool) {
    let mut batch = Batch::default();
    let mut next = Some(first);
    while let Some(item) = next.take() {
        if let Some(bytes) = SseEncoding.encode(&item) {
            batch.push(bytes);
        }
        if matches!(item, Outbound::Close(_)) {
            return (batch, true);
        }
        if batch.is_full() {
            break;
        }
        next = rx.try_recv().ok();
    }
    (batch, false)
}

/// Encoded items to write as one chunk.
#[derive(Debug, Default)]
struct Batch {
    payloads: Vec<Bytes>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, payload: Bytes) {
        if payload.is_empty() {
            return;
        }
        self.bytes += payload.len();
        self.payloads.push(payload);
    }

    fn is_full(&self) -> bool {
        self.payloads.len() >= BATCH_FRAMES || self.bytes >= BATCH_BYTES
    }

    /// Write the batch as one chunk (or as is, unchunked), then the last chunk when `last`, then
    /// flush: one vectored write where the stream supports it, else one copy.
    async fn write_to<W: AsyncWrite + Unpin>(
        &self,
        io: &mut W,
        chunked: bool,
        last: bool,
    ) -> io::Result<()> {
        let size_line = format!("{:x}\r\n", self.bytes);
        let mut slices: Vec<&[u8]> = Vec::with_capacity(self.payloads.len() + 3);
        if chunked && self.bytes > 0 {
            slices.push(size_line.as_bytes());
        }
        slices.extend(self.payloads.iter().map(|p| &p[..]));
        if chunked && self.bytes > 0 {
            slices.push(b"\r\n");
        }
        if chunked && last {
            slices.push(b"0\r\n\r\n");
        }
        let len = slices.iter().map(|s| s.len()).sum();
        write_slices(io, &slices, len).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::frame::SSE_HEARTBEAT;

    #[test]
    fn classify_tells_sse_from_everything_else() {
        assert_eq!(
            classify(b"GET /_rig/v1/connection/sse?jwt=x HTTP/1.1"),
            Some(true)
        );
        assert_eq!(
            classify(b"GET /_rig/v1/connection/sse HTTP/1.1"),
            Some(true)
        );
        assert_eq!(
            classify(b"GET /_rig/v1/connection/ssex HTTP/1.1"),
            Some(false)
        );
        assert_eq!(
            classify(b"GET /_rig/v1/connection/ws HTTP/1.1"),
            Some(false)
        );
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n\r\nSM"), Some(false));
        assert_eq!(classify(b"POST /_rig/v1/events"), Some(false));
        assert_eq!(classify(b"GET /_rig/v1/conn"), None);
        assert_eq!(classify(b"GET /_rig/v1/connection/sse"), None);
    }

    #[test]
    fn parse_head_reads_query_and_last_event_id() {
        let head = parse_head(
            b"GET /_rig/v1/connection/sse?jwt=a%20b&subscriptions=%5B%5D&last_event_id=q \
              HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1~abc\r\n\r\n",
            None,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!(head.params.jwt.as_deref(), Some("a b"));
        assert_eq!(head.params.subscriptions.as_deref(), Some("[]"));
        assert_eq!(head.params.last_event_id.as_deref(), Some("1~abc"));
        assert!(!head.http10);

        let head = parse_head(
            b"GET /_rig/v1/connection/sse?last_event_id=q HTTP/1.0\r\n\r\n",
            None,
        )
        .expect("valid")
        .expect("complete");
        assert_eq!(head.params.last_event_id.as_deref(), Some("q"));
        assert!(head.http10);
    }

    #[test]
    fn parse_head_waits_for_the_end_of_the_head() {
        assert!(
            parse_head(b"GET /_rig/v1/connection/sse HTTP/1.1\r\nHost: x\r\n", None)
                .expect("valid so far")
                .is_none()
        );
    }

    #[test]
    fn parse_head_refuses_malformed_heads() {
        for bad in [
            &b"GET /_rig/v1/connection/sse HTTP/1.1\r\nBad Header\r\n\r\n"[..],
            b"GET /_rig/v1/connection/sse HTTP/2.0\r\n\r\n",
            b"GET /_rig/v1/connection/ssex HTTP/1.1\r\n\r\n",
            b"POST /_rig/v1/connection/sse HTTP/1.1\r\n\r\n",
            b"GET /_rig/v1/connection/sse\x00 HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse_head(bad, None), Err(HeadError::Bad(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn parse_head_refuses_too_many_headers_as_too_large() {
        let mut head = b"GET /_rig/v1/connection/sse HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            head.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert!(matches!(parse_head(&head, None), Err(HeadError::TooLarge)));
    }

    /// Write `request` as a client, let the server side read (or refuse) it, and return what the
    /// client received.
    async fn exchange(request: Vec<u8>) -> (Option<Head>, String) {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            // The server may stop reading (and close) before everything is written.
            let _ = client.write_all(&request).await;
            let _ = client.shutdown().await;
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
            answer
        });
        let head = read_or_refuse(&mut server, Duration::from_secs(30), None).await;
        drop(server);
        let answer = writer.await.expect("client task");
        (head, String::from_utf8_lossy(&answer).into_owned())
    }

    #[tokio::test]
    async fn an_oversized_head_gets_431() {
        let mut request = b"GET /_rig/v1/connection/sse?jwt=".to_vec();
        request.extend(std::iter::repeat_n(b'a', MAX_HEAD + 100));
        request.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        let (head, answer) = exchange(request).await;
        assert!(head.is_none());
        assert!(
            answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{answer}"
        );
        assert!(answer.contains("connection: close\r\n"), "{answer}");
    }

    #[tokio::test]
    async fn a_malformed_head_gets_400() {
        let (head, answer) =
            exchange(b"GET /_rig/v1/connection/sse HTTP/1.1\r\nno colon\r\n\r\n".to_vec()).await;
        assert!(head.is_none());
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        assert!(
            answer.contains(&format!("content-length: {}\r\n", body.len())),
            "{answer}"
        );
        assert!(answer.contains("content-type: text/plain; charset=utf-8\r\n"));
    }

    #[tokio::test]
    async fn a_head_cut_short_gets_no_answer() {
        let (head, answer) = exchange(b"GET /_rig/v1/connection/sse HTTP/1.1\r\nHo".to_vec()).await;
        assert!(head.is_none());
        assert_eq!(answer, "");
    }

    #[tokio::test]
    async fn a_complete_head_is_read() {
        let (head, answer) =
            exchange(b"GET /_rig/v1/connection/sse?jwt=t HTTP/1.1\r\nHost: x\r\n\r\n".to_vec())
                .await;
        assert_eq!(head.expect("head").params.jwt.as_deref(), Some("t"));
        assert_eq!(answer, "");
    }

    #[tokio::test]
    async fn batches_are_written_as_one_chunk_and_the_stream_ends_with_the_last_chunk() {
        let (tx, rx) = crate::connections::queue::channel(8);
        let mut rx = Feed::new(rx);
        tx.try_send(Outbound::Heartbeat).expect("queued");
        tx.try_send(Outbound::Close(None)).expect("queued");
        let first = rx.try_recv().expect("item");
        let (batch, last) = collect(first, &mut rx);
        assert!(last);
        let mut out = Vec::new();
        batch.write_to(&mut out, true, last).await.expect("write");
        let mut expected = format!("{:x}\r\n", SSE_HEARTBEAT.len()).into_bytes();
        expected.extend_from_slice(&SSE_HEARTBEAT);
        expected.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(out, expected);

        let mut plain = Vec::new();
        batch
            .write_to(&mut plain, false, true)
            .await
            .expect("write");
        assert_eq!(plain, SSE_HEARTBEAT.to_vec());
    }

    #[test]
    fn the_ok_head_matches_the_hyper_path() {
        let head = String::from_utf8(ok_head(b"*", true)).expect("ascii");
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n\
             cache-control: no-cache\r\naccess-control-allow-origin: *\r\n\
             x-accel-buffering: no\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let head = String::from_utf8(ok_head(b"*", false)).expect("ascii");
        assert!(head.ends_with("x-accel-buffering: no\r\nconnection: close\r\n\r\n"));
    }
}
