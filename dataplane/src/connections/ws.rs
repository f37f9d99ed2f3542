//! WebSocket: `GET /_rig/v1/connection/ws?jwt=…&subscriptions=…&last_event_id=…` (HTTP/1.1
//! Upgrade; RFC 6455).
//!
//! **Behaviour (RIG's).** A valid upgrade request is always upgraded; the connect checks of
//! [`open`](super::open) run after the upgrade, and a refused connection gets a close frame 1000:
//! `Failed to decode subscription list: …` for malformed `subscriptions` JSON, `Reached maximum
//! number of connections` for the rate limit (RIG says `Bad request.` there too; a distinct reason
//! lets a client tell "retry later" from "fix the request"), `Bad request.` for everything else
//! (the detail is logged at debug level). An accepted connection gets one text frame per event:
//! the event JSON exactly as the producer sent it (`rig.connection.create` and
//! `rig.subscriptions_set` first). Heartbeats from the shared timer are server pings; client
//! pings get pongs, client pongs are ignored; any client text, binary or continuation frame
//! closes the connection with 1000 `This WebSocket endpoint cannot be used for two-way
//! communication.`; a client close is answered with a close. A killed session
//! (`rig.session_killed`) closes with 1000 `Session killed.` instead of sending the event, an
//! expired token (`rig.session_expired`, with `RIG_CLOSE_AT_TOKEN_EXPIRY`) with 1000 `Session
//! expired.` (RIG has no such close; worded like its kill, so clients can treat both alike); a
//! shutdown closes with 1001; a connection dropped by the hub's slow-consumer policy closes with
//! 1008. Close reasons are cut to 123 bytes at a character boundary. A request that is not a
//! WebSocket upgrade gets 400 (426 for a version other than 13). HTTP/2 extended CONNECT is not
//! offered.
//!
//! **Resuming.** WebSocket frames carry the bare event, so the client does not see the resume
//! token that SSE writes as `id:`. It resumes with the CloudEvent `id` of the last event it
//! received instead: `last_event_id=<id>`. The server looks the id up in the replay window (the
//! oldest retained event with that id, so a reused id replays more rather than less) and resumes
//! from the token recorded after it; an SSE resume token (`1~…`) is accepted as well. An id the
//! window does not hold (evicted, a greeting's id, an event published over HTTP to another
//! process, any id after a restart) yields `rig.connection.gap` before live events, so the client
//! knows to refetch.
//!
//! Known limit: the token found is this process's frontier after the event. Another process (or
//! this one after a restart, its window read back from Kafka) interleaves partitions differently,
//! so events of other partitions that the client had not received yet can sit before the event
//! here and be skipped. Only a signed token (SSE, long-polling) resumes exactly on every pod.
//!
//! **Memory and writes.** RFC 6455 is implemented here for a server that only sends (see
//! [`codec`]); a general library would keep per-connection read and write buffers (tungstenite
//! allocates its read buffer eagerly and never shrinks its write buffer). Per connection this
//! module holds one task of about 1 KiB (its 256-byte read buffer included) and nothing else:
//! frames are written with vectored writes of a small header plus the event's shared `Bytes` (no
//! copy), everything already queued goes out in one write (up to 64 frames or 64 KiB), and the
//! batch's small bookkeeping vectors are freed after the write. A client that accepts no bytes for
//! 30 s is dropped.

mod codec;

use std::borrow::Cow;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use hyper::Request;
use hyper::body::Incoming as IncomingBody;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use self::codec::{HandshakeError, Head, Incoming, Reader, close_code, opcode};
use super::batch::{BATCH_BYTES, BATCH_FRAMES, with_timeout, write_slices};
use super::context::Connections;
use super::feed::Feed;
use super::hub::{Outbound, Registration};
use super::open::{self, ConnectParams, Refused};
use crate::http::{Body, full, text};
use crate::metrics::Transport;

/// How long the server waits for the client's close frame after sending its own (RFC 6455
/// §7.1.1: the server closes TCP after the closing handshake).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The event type that a killed session's connections receive (SSE); WebSocket closes instead.
const SESSION_KILLED: &str = "rig.session_killed";

/// RIG's reason when a client sends data.
const TWO_WAY: &str = "This WebSocket endpoint cannot be used for two-way communication.";

/// A close frame the server will send: code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Closing {
    code: u16,
    reason: Cow<'static, str>,
}

impl Closing {
    fn new(code: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    /// The close frame for a refused connection (RIG's reasons, see the module docs).
    fn refused(refused: &Refused) -> Self {
        let detailed = refused.status == StatusCode::TOO_MANY_REQUESTS
            || refused
                .message
                .starts_with("Failed to decode subscription list");
        if detailed {
            Self::new(close_code::NORMAL, refused.message.clone())
        } else {
            Self::new(close_code::NORMAL, "Bad request.")
        }
    }
}

/// Answer an upgrade request on `/_rig/v1/connection/ws`: 101 and a task that serves the
/// connection, or 400/426 when the request is not a WebSocket handshake.
pub fn connect(
    conns: &Arc<Connections>,
    mut req: Request<IncomingBody>,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    let accept = match codec::accept(req.version(), req.headers()) {
        Ok(accept) => accept,
        Err(error) => return handshake_refused(&error),
    };
    let mut params = ConnectParams::from_query(req.uri().query());
    params.trace(req.headers().get("traceparent").map(|v| v.as_bytes()));
    params.last_event_id = params.last_event_id.filter(|id| !id.is_empty());
    params.client = Some(conns.client_of(peer, req.headers()));
    let on_upgrade = hyper::upgrade::on(&mut req);
    let conns = conns.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "WebSocket upgrade failed");
                return;
            }
        };
        if let Some(id) = params.last_event_id.take() {
            params.last_event_id = Some(resume_point(&conns, id));
        }
        let start = open::open_resumed(&conns, Transport::Ws, &params)
            .await
            .map_err(|refused| {
                tracing::debug!(reason = %refused.message, "refused a WebSocket connection");
                Closing::refused(&refused)
            });
        run(
            TokioIo::new(upgraded),
            start.map(|opened| opened.registration),
        )
        .await;
    });
    let mut res = Response::new(full(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = res.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    res
}

fn handshake_refused(error: &HandshakeError) -> Response<Body> {
    match error {
        HandshakeError::Version => {
            let mut res = text(StatusCode::UPGRADE_REQUIRED, error.to_string());
            let headers = res.headers_mut();
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static(codec::VERSION),
            );
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            res
        }
        HandshakeError::NotUpgrade | HandshakeError::Key => {
            text(StatusCode::BAD_REQUEST, error.to_string())
        }
    }
}

/// The resume token for `last_event_id`: itself when it is a resume token, else the token after
/// the oldest retained event whose CloudEvent `id` it is; unchanged when neither (the connection
/// then starts with a gap event).
fn resume_point(conns: &Connections, last_event_id: String) -> String {
    if conns.fanout.is_resume_token(&last_event_id) {
        return last_event_id;
    }
    conns
        .fanout
        .token_after_event(&last_event_id)
        .unwrap_or(last_event_id)
}

/// Serve an upgraded connection: the registration's queue, or a close frame when refused.
async fn run<IO>(io: IO, start: Result<Registration, Closing>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Conn {
        io,
        reader: Reader::default(),
    };
    let closing = match start {
        Err(closing) => closing,
        Ok(registration) => match conn.serve(registration).await {
            Ok(Some(closing)) => closing,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%error, "WebSocket connection ended");
                return;
            }
        },
    };
    conn.close(closing).await;
}

/// An upgraded connection.
struct Conn<IO> {
    io: IO,
    reader: Reader,
}

impl<IO> Conn<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    /// Forward the queue until the server or the client ends the connection: `Some` is the close
    /// frame the server must still send, `None` means the connection is finished. The
    /// registration is dropped (the connection unregistered) on return.
    async fn serve(&mut self, registration: Registration) -> io::Result<Option<Closing>> {
        let Registration { mut rx, guard, .. } = registration;
        let _guard = guard;
        loop {
            tokio::select! {
                item = rx.recv() => {
                    let Some(item) = item else {
                        // The hub dropped the connection (slow consumer).
                        return Ok(Some(Closing::new(
                            close_code::POLICY,
                            "Too slow: events were dropped. Reconnect with last_event_id.",
                        )));
                    };
                    if let Some(closing) = self.send_batch(item, &mut rx).await? {
                        return Ok(Some(closing));
                    }
                }
                read = self.io.read(self.reader.spare()) => {
                    let n = read?;
                    if n == 0 {
                        return Ok(None);
                    }
                    self.reader.filled(n);
                    loop {
                        match self.reader.next() {
                            Ok(None) => break,
                            Ok(Some(Incoming::Ping(payload))) => {
                                let pong = codec::control_frame(opcode::PONG, payload.as_slice());
                                self.write(&pong).await?;
                            }
                            Ok(Some(Incoming::Pong)) => {}
                            Ok(Some(Incoming::Close(code))) => {
                                self.answer_close(code).await;
                                return Ok(None);
                            }
                            Ok(Some(Incoming::Data(op))) => {
                                tracing::debug!(opcode = op, "WebSocket client sent data");
                                return Ok(Some(Closing::new(close_code::NORMAL, TWO_WAY)));
                            }
                            Err(error) => {
                                tracing::debug!(%error, "WebSocket client broke the protocol");
                                return Ok(Some(Closing::new(error.close_code(), error.to_string())));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Write `first` and everything already queued behind it in one write; `Some` when a close
    /// was queued (the frames before it are written first).
    async fn send_batch(&mut self, first: Outbound, rx: &mut Feed) -> io::Result<Option<Closing>> {
        let mut batch = Batch::default();
        let mut closing = None;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Outbound::Frame(frame) => batch.push(opcode::TEXT, frame.json.clone()),
                Outbound::Heartbeat => batch.push(opcode::PING, Bytes::new()),
                Outbound::Close(frame) => {
                    closing = Some(match frame {
                        Some(frame) if frame.event_type == SESSION_KILLED => {
                            Closing::new(close_code::NORMAL, "Session killed.")
                        }
                        Some(frame) if frame.event_type == super::expiry::SESSION_EXPIRED => {
                            Closing::new(
                                close_code::NORMAL,
                                crate::connections::expiry::WS_CLOSE_REASON,
                            )
                        }
                        Some(frame) => {
                            batch.push(opcode::TEXT, frame.json.clone());
                            Closing::new(close_code::NORMAL, "")
                        }
                        None => Closing::new(close_code::GOING_AWAY, "Server going away."),
                    });
                    break;
                }
            }
            if batch.is_full() {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !batch.is_empty() {
            with_timeout(batch.write_to(&mut self.io)).await?;
        }
        Ok(closing)
    }

    /// Write one small frame (a pong, a close) and flush.
    async fn write(&mut self, frame: &[u8]) -> io::Result<()> {
        with_timeout(async {
            self.io.write_all(frame).await?;
            self.io.flush().await
        })
        .await
    }

    /// The client closed: answer with its code (RFC 6455 §5.5.1), then close TCP.
    async fn answer_close(&mut self, code: Option<u16>) {
        let frame = match code {
            Some(code) => codec::close_frame(code, ""),
            None => codec::control_frame(opcode::CLOSE, &[]),
        };
        if self.write(&frame).await.is_ok() {
            let _ = with_timeout(self.io.shutdown()).await;
        }
    }

    /// Send `closing`, wait (bounded) for the client's close frame, then close TCP.
    async fn close(&mut self, closing: Closing) {
        tracing::debug!(code = closing.code, reason = %closing.reason, "closing a WebSocket connection");
        if self
            .write(&codec::close_frame(closing.code, &closing.reason))
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.await_client_close()).await;
        let _ = with_timeout(self.io.shutdown()).await;
    }

    /// Read until the client's close frame, the end of the stream, or an error; everything else
    /// the client sends now is ignored.
    async fn await_client_close(&mut self) {
        loop {
            loop {
                match self.reader.next() {
                    Ok(Some(Incoming::Close(_))) | Err(_) => return,
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                }
            }
            match self.io.read(self.reader.spare()).await {
                Ok(0) | Err(_) => return,
                Ok(n) => self.reader.filled(n),
            }
        }
    }
}

/// Frames to write at once: each a header and a payload shared with the other receivers.
#[derive(Debug, Default)]
struct Batch {
    heads: Vec<Head>,
    payloads: Vec<Bytes>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, opcode: u8, payload: Bytes) {
        let head = Head::new(opcode, payload.len());
        self.bytes += head.as_bytes().len() + payload.len();
        self.heads.push(head);
        self.payloads.push(payload);
    }

    fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    fn is_full(&self) -> bool {
        self.heads.len() >= BATCH_FRAMES || self.bytes >= BATCH_BYTES
    }

    /// Write every frame, then flush: one vectored write where the stream supports it (no copy of
    /// the payloads), else one copy into a buffer that lives only for this write.
    async fn write_to<W: AsyncWrite + Unpin>(&self, io: &mut W) -> io::Result<()> {
        let mut slices: Vec<&[u8]> = Vec::with_capacity(self.heads.len() * 2);
        for (head, payload) in self.heads.iter().zip(&self.payloads) {
            slices.push(head.as_bytes());
            slices.push(payload);
        }
        write_slices(io, &slices, self.bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::codec::tests::client_frame;
    use super::*;
    use crate::connections::hub::Hub;
    use crate::events::CloudEvent;
    use crate::events::frame::Frame;
    use crate::metrics::Metrics;
    use crate::subscriptions::Extractors;
    use tokio::io::DuplexStream;

    /// A frame as the client sees it: opcode and payload.
    async fn read_frame(client: &mut DuplexStream) -> (u8, Vec<u8>) {
        let mut head = [0u8; 2];
        client.read_exact(&mut head).await.expect("frame header");
        assert_eq!(head[0] & 0xF0, 0x80, "final, no reserved bits");
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let len = match head[1] & 0x7F {
            126 => usize::from(client.read_u16().await.expect("length")),
            127 => usize::try_from(client.read_u64().await.expect("length")).expect("usize"),
            n => usize::from(n),
        };
        let mut payload = vec![0u8; len];
        client.read_exact(&mut payload).await.expect("payload");
        (head[0] & 0x0F, payload)
    }

    fn close_of(payload: &[u8]) -> (u16, String) {
        let code = u16::from_be_bytes([payload[0], payload[1]]);
        (code, String::from_utf8_lossy(&payload[2..]).into_owned())
    }

    fn hub() -> Arc<Hub> {
        Arc::new(Hub::new(
            Arc::new(Extractors::new()),
            16,
            Arc::new(Metrics::default()),
        ))
    }

    fn frame(event_type: &str) -> (Arc<Frame>, Bytes) {
        let event = CloudEvent::new_rig(event_type, serde_json::json!({"n": 1}));
        let json = event.json.clone();
        (Arc::new(Frame::new(&event, Some("1~t/0:1"))), json)
    }

    /// A served connection over an in-memory stream: the hub, the connection id, the client end.
    fn serve_one(hub: &Arc<Hub>) -> (u64, DuplexStream, tokio::task::JoinHandle<()>) {
        let registration = hub.register(Transport::Ws, &[], true);
        let id = registration.id;
        let (client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(run(server, Ok(registration)));
        (id, client, task)
    }

    #[tokio::test]
    async fn events_are_text_frames_of_the_event_json_and_heartbeats_are_pings() {
        let hub = hub();
        let (id, mut client, _task) = serve_one(&hub);
        let (a, a_json) = frame("a");
        let (b, b_json) = frame("b");
        assert!(hub.send_to(id, Outbound::Frame(a)));
        assert!(hub.send_to(id, Outbound::Heartbeat));
        assert!(hub.send_to(id, Outbound::Frame(b)));
        assert_eq!(
            read_frame(&mut client).await,
            (opcode::TEXT, a_json.to_vec())
        );
        assert_eq!(read_frame(&mut client).await, (opcode::PING, Vec::new()));
        assert_eq!(
            read_frame(&mut client).await,
            (opcode::TEXT, b_json.to_vec())
        );
    }

    #[tokio::test]
    async fn pings_get_pongs_and_pongs_are_ignored() {
        let hub = hub();
        let (id, mut client, _task) = serve_one(&hub);
        client
            .write_all(&client_frame(0x8A, b"unsolicited"))
            .await
            .expect("write");
        client
            .write_all(&client_frame(0x89, b"are you there"))
            .await
            .expect("write");
        assert_eq!(
            read_frame(&mut client).await,
            (opcode::PONG, b"are you there".to_vec())
        );
        let (a, a_json) = frame("a");
        assert!(hub.send_to(id, Outbound::Frame(a)), "still registered");
        assert_eq!(
            read_frame(&mut client).await,
            (opcode::TEXT, a_json.to_vec())
        );
    }

    #[tokio::test]
    async fn client_data_closes_with_rigs_reason_and_unregisters() {
        let hub = hub();
        let (_, mut client, task) = serve_one(&hub);
        client
            .write_all(&client_frame(0x81, b"hello"))
            .await
            .expect("write");
        let (op, payload) = read_frame(&mut client).await;
        assert_eq!(op, opcode::CLOSE);
        assert_eq!(close_of(&payload), (1000, TWO_WAY.to_owned()));
        assert!(hub.is_empty(), "unregistered as soon as closing starts");
        client
            .write_all(&client_frame(0x88, &1000u16.to_be_bytes()))
            .await
            .expect("write");
        task.await.expect("task");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("eof");
        assert!(rest.is_empty(), "nothing after the close frame: {rest:?}");
    }

    #[tokio::test]
    async fn a_client_close_is_answered_with_its_code() {
        let hub = hub();
        let (_, mut client, task) = serve_one(&hub);
        client
            .write_all(&client_frame(0x88, &[0x03, 0xE9, b'b', b'y', b'e']))
            .await
            .expect("write");
        assert_eq!(
            read_frame(&mut client).await,
            (opcode::CLOSE, 1001u16.to_be_bytes().to_vec())
        );
        task.await.expect("task");
        assert!(hub.is_empty());
    }

    #[tokio::test]
    async fn a_protocol_error_closes_with_1002() {
        let hub = hub();
        let (_, mut client, _task) = serve_one(&hub);
        client.write_all(&[0x89, 0x00]).await.expect("write"); // unmasked ping
        let (op, payload) = read_frame(&mut client).await;
        assert_eq!(op, opcode::CLOSE);
        assert_eq!(close_of(&payload).0, 1002);
    }

    #[tokio::test]
    async fn session_kill_and_shutdown_close_with_their_codes() {
        let hub = hub();
        let (id, mut client, _task) = serve_one(&hub);
        let (killed, _) = frame(SESSION_KILLED);
        assert!(hub.send_to(id, Outbound::Close(Some(killed))));
        let (op, payload) = read_frame(&mut client).await;
        assert_eq!(op, opcode::CLOSE, "the event itself is not sent");
        assert_eq!(close_of(&payload), (1000, "Session killed.".to_owned()));

        let (id, mut client, _task) = serve_one(&hub);
        let (expired, _) = frame(crate::connections::expiry::SESSION_EXPIRED);
        assert!(hub.send_to(id, Outbound::Close(Some(expired))));
        let (op, payload) = read_frame(&mut client).await;
        assert_eq!(op, opcode::CLOSE, "the event itself is not sent");
        assert_eq!(close_of(&payload), (1000, "Session expired.".to_owned()));

        let (id, mut client, _task) = serve_one(&hub);
        let (a, a_json) = frame("a");
        assert!(hub.send_to(id, Outbound::Frame(a)));
        hub.close_all();
        assert_eq!(
            read_frame(&mut client).await,
            (opcode::TEXT, a_json.to_vec())
        );
        let (op, payload) = read_frame(&mut client).await;
        assert_eq!(op, opcode::CLOSE);
        assert_eq!(close_of(&payload).0, 1001);
    }

    #[tokio::test]
    async fn refused_connections_get_a_close_frame_with_the_reason() {
        let (mut client, server) = tokio::io::duplex(4096);
        let refused = Refused {
            status: StatusCode::BAD_REQUEST,
            message: format!("Failed to decode subscription list: {}", "x".repeat(200)),
        };
        let task = tokio::spawn(run(server, Err(Closing::refused(&refused))));
        let (op, payload) = read_frame(&mut client).await;
        assert_eq!(op, opcode::CLOSE);
        let (code, reason) = close_of(&payload);
        assert_eq!(code, 1000);
        assert!(reason.starts_with("Failed to decode subscription list: xxx"));
        assert_eq!(reason.len(), 123, "cut to fit a control frame");
        drop(client);
        task.await.expect("task ends when the client goes away");

        for (status, message, expected) in [
            (
                StatusCode::BAD_REQUEST,
                "could not parse subscriptions: could not decode JWT",
                "Bad request.",
            ),
            (
                StatusCode::TOO_MANY_REQUESTS,
                "Reached maximum number of connections",
                "Reached maximum number of connections",
            ),
        ] {
            let refused = Refused {
                status,
                message: message.to_owned(),
            };
            assert_eq!(Closing::refused(&refused).reason, expected);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_nothing_is_dropped_after_the_write_timeout() {
        let hub = hub();
        let registration = hub.register(Transport::Ws, &[], true);
        let id = registration.id;
        // A tiny pipe the client never reads: the first big frame cannot be written.
        let (_client, server) = tokio::io::duplex(16);
        let task = tokio::spawn(run(server, Ok(registration)));
        let event = CloudEvent::new_rig("big", serde_json::json!({"pad": "x".repeat(4096)}));
        assert!(hub.send_to(id, Outbound::Frame(Arc::new(Frame::new(&event, None)))));
        // Paused time advances by itself while everything waits: the timeout fires.
        task.await.expect("task ends");
        assert!(hub.is_empty());
    }
}
