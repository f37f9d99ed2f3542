//! The proxy's direct HTTP/1.1 path: the common proxied request served without hyper.
//!
//! A keep-alive HTTP/1.1 connection's requests are read here as long as each is a plain proxied
//! request: HTTP/1.1, no body (no `content-length` other than 0, no `transfer-encoding`), no
//! `expect` or `upgrade`, not a `/_rig/...` path, matching an endpoint whose target is an
//! `http://` HTTP/1.1 backend answering directly (`response_from: http`), and, when `secured`,
//! carrying a valid JWT. Such a request's head is rewritten once, as bytes (the same header rules
//! as the hyper path in [`super::http`]: hop-by-hop headers and those `connection` names dropped,
//! `host`, `forwarded` and added headers set, `traceparent` kept when valid or started), written
//! to a pooled upstream connection ([`super::pool::StreamPool`]), and the backend's answer is
//! relayed as it arrives, its framing (`content-length`, chunked, or until the backend closes)
//! followed so the connection can be reused. No header map is built and nothing is parsed twice:
//! what the client sent goes upstream byte for byte apart from the rewritten headers.
//!
//! A `secured` request without a valid JWT gets RIG's 401 here (each token is verified once).
//! Anything else hands the connection, with the bytes read so far, to the hyper server for the
//! rest of its life (a 404, a body upload, an HTTP/1.0 client, an unusual head), so every
//! other behaviour stays where it is implemented and tested. A reused upstream connection that
//! fails before any answer byte (the backend closed it meanwhile) is retried once on a new one
//! for idempotent methods; otherwise 502, and no answer head within the route's timeout 504, as
//! on the hyper path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::Proxy;
use super::metrics::Status;
use super::pool::{PoolError, StreamPool, connect_tcp};
use super::routes::{Api, Endpoint, Found, HttpTarget, ResponseFrom, Table, Target};

/// A request head larger than this goes to hyper (which answers 431 when it is too large).
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// A backend's answer head larger than this is a bad gateway.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// The answer buffer a connection keeps between requests (relaying reads 16 KiB at a time).
const MAX_KEPT_BUFFER: usize = 64 * 1024;
/// Headers per head parsed here (hyper's limit too); more go to hyper (requests) or are a bad
/// gateway (answers).
const MAX_HEADERS: usize = 100;
/// Whether `name` describes one connection (the hyper path's list, [`super::http::HOP_BY_HOP`]).
fn hop_by_hop(name: &str) -> bool {
    super::http::HOP_BY_HOP.iter().any(|h| eq(h.as_str(), name))
}

/// Serve `client`'s requests while they take the direct path; the connection and the bytes read
/// from it when a request does not (`None`: the connection ended here).
pub async fn serve(
    proxy: &Arc<Proxy>,
    mut client: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> Option<(TcpStream, Bytes)> {
    let mut buf = BytesMut::with_capacity(4096);
    let mut up = BytesMut::new();
    let (mut generation, mut table) = (proxy.generation(), proxy.table());
    // Each head (the first, or the next on a kept-alive connection) within the head timeout. One
    // timer per connection, re-armed at most every `rearm` (not per request: a busy kept-alive
    // connection does not touch the timer wheel on each request); so a deadline is at most
    // `rearm` earlier than the exact one, never later.
    let head_timeout = proxy.settings.head_timeout;
    let rearm = (head_timeout / 4).min(std::time::Duration::from_secs(1));
    let mut armed_at = tokio::time::Instant::now();
    let deadline = tokio::time::sleep_until(armed_at + head_timeout);
    tokio::pin!(deadline);
    loop {
        let now = tokio::time::Instant::now();
        if now.saturating_duration_since(armed_at) >= rearm {
            armed_at = now;
            deadline.as_mut().reset(now + head_timeout);
        }
        let plan = loop {
            // The table as it is when the head is read (a connection may idle across reloads).
            if let Some((g, t)) = proxy.table_if_changed(generation) {
                (generation, table) = (g, t);
            }
            match plan(proxy, &table, &buf, peer) {
                Decision::Partial if buf.len() < MAX_REQUEST_HEAD => {}
                Decision::Partial | Decision::Other => return Some((client, buf.freeze())),
                Decision::Proxy(plan) => break plan,
                Decision::Refused(refused) => {
                    buf.advance(refused.head_len);
                    if !unauthorized(proxy, &mut client, &refused).await {
                        return None;
                    }
                    continue;
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096);
            }
            let read = tokio::select! {
                read = client.read_buf(&mut buf) => read,
                // Between requests the connection is idle: a stopping listener closes it.
                _ = crate::support::stopped(&mut shutdown), if buf.is_empty() => return None,
                _ = &mut deadline => {
                    tracing::debug!(%peer, "closing a connection whose request head did not arrive in time");
                    return None;
                }
            };
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        };
        buf.advance(plan.head_len);
        let keep = exchange(proxy, &mut client, &mut up, &plan).await;
        if !keep || *shutdown.borrow() {
            return None;
        }
        if up.capacity() > MAX_KEPT_BUFFER {
            // A large answer grew it: an idle keep-alive connection does not keep that.
            up = BytesMut::new();
        }
    }
}

/// What to do with the bytes read so far.
enum Decision<'t> {
    /// The head is not complete yet.
    Partial,
    /// Not for this path: hyper serves the connection from here.
    Other,
    /// A proxied request.
    Proxy(Plan<'t>),
    /// A `secured` endpoint's request without a valid JWT: RIG's 401 (answered here, so each
    /// token is verified, and a refusal counted, once).
    Refused(Refused<'t>),
}

/// A request refused for its JWT.
struct Refused<'t> {
    head_len: usize,
    api: &'t Api,
    endpoint: &'t Endpoint,
    head_method: bool,
    client_close: bool,
}

/// A proxied request, ready to go upstream.
struct Plan<'t> {
    /// Bytes of the client's head (consumed once planned).
    head_len: usize,
    api: &'t Api,
    endpoint: &'t Endpoint,
    target: &'t HttpTarget,
    /// The upstream request head.
    request: Vec<u8>,
    /// `HEAD`: the answer has no body whatever its headers say.
    head_method: bool,
    /// Retrying on another connection is safe.
    idempotent: bool,
    /// The client asked to close after this answer.
    client_close: bool,
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Parse the head in `buf` and decide.
fn plan<'t>(proxy: &Proxy, table: &'t Table, buf: &[u8], peer: SocketAddr) -> Decision<'t> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Decision::Partial,
        Err(_) => return Decision::Other,
    };
    let (Some(method), Some(target_path), Some(1)) = (req.method, req.path, req.version) else {
        return Decision::Other;
    };
    if !target_path.starts_with('/') || target_path.starts_with("/_rig") {
        return Decision::Other;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Decision::Other;
    };
    let mut client_close = false;
    let mut named: Vec<&str> = Vec::new();
    for h in req.headers.iter() {
        let name = h.name;
        if eq(name, "content-length") {
            if std::str::from_utf8(h.value).map(str::trim) != Ok("0") {
                return Decision::Other;
            }
        } else if eq(name, "transfer-encoding") || eq(name, "upgrade") || eq(name, "expect") {
            return Decision::Other;
        } else if eq(name, "connection") {
            let Ok(value) = std::str::from_utf8(h.value) else {
                return Decision::Other;
            };
            for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if eq(token, "close") {
                    client_close = true;
                } else if eq(token, "upgrade") {
                    return Decision::Other;
                } else if !eq(token, "keep-alive") {
                    named.push(token);
                }
            }
        }
    }
    let (path, query) = match target_path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target_path, None),
    };
    if super::path::normalize(path) != Ok(None) {
        // A path to normalise (or refuse): hyper's path does it, for every request alike.
        return Decision::Other;
    }
    let Found::Endpoint(api, endpoint) = table.find(&method, path) else {
        return Decision::Other;
    };
    let shared = &api.shared;
    let (Target::Http(target), ResponseFrom::Http) =
        (endpoint.target(shared), endpoint.response_from(shared))
    else {
        return Decision::Other;
    };
    if target.scheme != http::uri::Scheme::HTTP || target.http2 {
        return Decision::Other;
    }
    if endpoint.add_headers
        && shared.add_headers.iter().any(|(n, _)| {
            matches!(
                n.as_str(),
                "host" | "forwarded" | "traceparent" | "tracestate"
            )
        })
    {
        // Added headers that compete with the ones set here: hyper's path has the precedence.
        return Decision::Other;
    }
    if endpoint.secured {
        // Only the header the route reads is looked at; a refusal is hyper's to answer (401).
        let mut auth_headers = HeaderMap::new();
        if let Some(name) = &shared.auth.header {
            for h in req.headers.iter().filter(|h| eq(h.name, name.as_str())) {
                if let Ok(value) = HeaderValue::from_bytes(h.value) {
                    auth_headers.append(name.clone(), value);
                }
            }
        }
        if !super::authorized_in(proxy, &shared.auth, &auth_headers, query) {
            return Decision::Refused(Refused {
                head_len,
                api,
                endpoint,
                head_method: method == Method::HEAD,
                client_close,
            });
        }
    }

    let rewritten = endpoint.rewrite(path);
    if endpoint.replacement.is_some() && !rewritten.bytes().all(|b| b.is_ascii_graphic()) {
        // A rewrite template that yields no valid request target: hyper's path answers 502.
        return Decision::Other;
    }
    let mut out = Vec::with_capacity(head_len + 256);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(rewritten.as_bytes());
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let added = |name: &str| {
        endpoint.add_headers && shared.add_headers.iter().any(|(n, _)| eq(n.as_str(), name))
    };
    let traceparent = req
        .headers
        .iter()
        .find(|h| eq(h.name, "traceparent"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .filter(|v| super::http::valid_traceparent(v))
        .filter(|_| !named.iter().any(|n| eq(n, "traceparent")));
    for h in req.headers.iter() {
        let name = h.name;
        let dropped = hop_by_hop(name)
            || named.iter().any(|n| eq(n, name))
            || eq(name, "host")
            || eq(name, "forwarded")
            || eq(name, "traceparent")
            || (traceparent.is_none() && eq(name, "tracestate"))
            || added(name);
        if !dropped {
            push_header(&mut out, name.as_bytes(), h.value);
        }
    }
    push_header(&mut out, b"host", target.host.as_bytes());
    let forwarded = super::http::forwarded(peer.ip(), &proxy.by);
    push_header(&mut out, b"forwarded", forwarded.as_bytes());
    match traceparent {
        Some(tp) => push_header(&mut out, b"traceparent", tp.as_bytes()),
        None => {
            if let Some(tp) = super::http::new_traceparent() {
                push_header(&mut out, b"traceparent", tp.as_bytes());
            }
        }
    }
    if endpoint.add_headers {
        for (i, (name, value)) in shared.add_headers.iter().enumerate() {
            // A name given twice: the last value, as the hyper path's `insert`.
            if shared.add_headers[i + 1..].iter().all(|(n, _)| n != name) {
                push_header(&mut out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    Decision::Proxy(Plan {
        head_len,
        api,
        endpoint,
        target,
        request: out,
        head_method: method == Method::HEAD,
        idempotent: method.is_idempotent(),
        client_close,
    })
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Why an exchange failed before the answer head was relayed.
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error(transparent)]
    Connect(#[from] PoolError),
    /// Nothing came back on a connection (write failed, or it closed or reset before any
    /// answer byte): on a reused connection, the backend had closed it.
    #[error("the connection closed before any answer: {0}")]
    Unanswered(std::io::Error),
    #[error("reading the answer failed: {0}")]
    Read(std::io::Error),
    #[error("the answer head is not valid HTTP/1.1: {0}")]
    BadHead(String),
}

/// How the answer body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    /// Until the backend closes the connection.
    Close,
}

/// An answer head, rewritten for the client.
struct Answer {
    /// Bytes of the upstream head (to skip in the read buffer).
    head_len: usize,
    /// The head for the client.
    head: Vec<u8>,
    framing: Framing,
    /// The upstream connection may serve another request afterwards.
    reusable: bool,
}

/// One proxied exchange; whether the client connection stays open.
async fn exchange(
    proxy: &Arc<Proxy>,
    client: &mut TcpStream,
    up: &mut BytesMut,
    plan: &Plan<'_>,
) -> bool {
    let pool = proxy.upstream_streams();
    let (api, endpoint) = (plan.api, plan.endpoint);
    let started = Instant::now();
    let timeout = api.shared.timeout;
    let answered = tokio::time::timeout(timeout, send(pool, plan, up)).await;
    let (upstream, answer) = match answered {
        Err(_) => {
            tracing::info!(api = %api.shared.id, endpoint = %endpoint.id, timeout_ms = timeout.as_millis() as u64, "proxy target did not answer in time");
            endpoint.counters.count(Status::ResponseTimeout);
            return reply(client, "504 Gateway Timeout", "Gateway timeout.", plan).await;
        }
        Ok(Err(error)) => {
            tracing::info!(api = %api.shared.id, endpoint = %endpoint.id, %error, "proxy target unreachable");
            endpoint.counters.count(Status::Unreachable);
            return reply(client, "502 Bad Gateway", "Bad gateway.", plan).await;
        }
        Ok(Ok(pair)) => pair,
    };
    proxy.metrics.upstream(started.elapsed());
    endpoint.counters.count(Status::Ok);
    up.advance(answer.head_len);
    let mut head = answer.head;
    let reuse = answer.reusable.then_some((pool, &plan.target.pool_key));
    let relayed = relay(client, upstream, up, &mut head, answer.framing, reuse).await;
    match relayed {
        Relayed::Done => !plan.client_close && answer.framing != Framing::Close,
        Relayed::ClientGone => false,
        Relayed::UpstreamBroke(error) => {
            tracing::warn!(%error, "the proxy target's response body broke off");
            false
        }
    }
}

/// Send the request on a pooled or new connection and read the answer head; a reused connection
/// that closed before answering is replaced once per stale connection (idempotent methods).
async fn send(
    pool: &StreamPool,
    plan: &Plan<'_>,
    up: &mut BytesMut,
) -> Result<(TcpStream, Answer), UpstreamError> {
    loop {
        let (mut stream, reused) = match pool.checkout(&plan.target.pool_key) {
            Some(stream) => (stream, true),
            None => (connect_tcp(&plan.target.authority).await?, false),
        };
        up.clear();
        match roundtrip(&mut stream, plan, up).await {
            Ok(answer) => return Ok((stream, answer)),
            Err(UpstreamError::Unanswered(error)) if reused && plan.idempotent => {
                tracing::debug!(%error, "pooled upstream connection was closed; retrying on another");
            }
            Err(error) => return Err(error),
        }
    }
}

async fn roundtrip(
    stream: &mut TcpStream,
    plan: &Plan<'_>,
    up: &mut BytesMut,
) -> Result<Answer, UpstreamError> {
    stream
        .write_all(&plan.request)
        .await
        .map_err(UpstreamError::Unanswered)?;
    loop {
        if up.capacity() - up.len() < 2048 {
            up.reserve(8192);
        }
        let n = match stream.read_buf(up).await {
            Ok(n) => n,
            Err(error) if up.is_empty() => return Err(UpstreamError::Unanswered(error)),
            Err(error) => return Err(UpstreamError::Read(error)),
        };
        if n == 0 {
            let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
            return Err(if up.is_empty() {
                UpstreamError::Unanswered(eof)
            } else {
                UpstreamError::Read(eof)
            });
        }
        // Several heads may have arrived at once (1xx ones before the final one).
        loop {
            match parse_answer(up, plan.head_method)? {
                Some(Parsed::Informational(len)) => up.advance(len),
                Some(Parsed::Final(answer)) => return Ok(answer),
                None if up.len() > MAX_RESPONSE_HEAD => {
                    return Err(UpstreamError::BadHead("the head is too large".into()));
                }
                None => break,
            }
        }
    }
}

enum Parsed {
    /// A 1xx head of this length, not passed on (as the hyper client does).
    Informational(usize),
    Final(Answer),
}

/// Parse an answer head at the start of `up` (`None`: not complete yet).
fn parse_answer(up: &[u8], head_method: bool) -> Result<Option<Parsed>, UpstreamError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(up) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(UpstreamError::BadHead(error.to_string())),
    };
    let (Some(code), Some(version)) = (res.code, res.version) else {
        return Err(UpstreamError::BadHead("no status".into()));
    };
    if code == 101 {
        return Err(UpstreamError::BadHead(
            "an unrequested protocol switch".into(),
        ));
    }
    if (100..200).contains(&code) {
        return Ok(Some(Parsed::Informational(head_len)));
    }
    let mut close = version == 0;
    let mut named: Vec<&str> = Vec::new();
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for h in res.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("");
        if eq(h.name, "connection") {
            for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if eq(token, "close") {
                    close = true;
                } else if eq(token, "keep-alive") {
                    close &= version != 0;
                } else if !eq(token, "content-length") && !eq(token, "transfer-encoding") {
                    // The framing headers describe the message, whatever `connection` says.
                    named.push(token);
                }
            }
        } else if eq(h.name, "content-length") {
            // Digits only (no sign, no spaces inside), a list of equal values allowed.
            for item in value.split(',').map(str::trim) {
                let n = (!item.is_empty() && item.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| item.parse::<u64>().ok())
                    .flatten()
                    .ok_or_else(|| UpstreamError::BadHead(format!("content-length {value:?}")))?;
                if length.is_some_and(|l| l != n) {
                    return Err(UpstreamError::BadHead("conflicting content-length".into()));
                }
                length = Some(n);
            }
        } else if eq(h.name, "transfer-encoding") {
            if version == 0 {
                return Err(UpstreamError::BadHead(
                    "transfer-encoding in an HTTP/1.0 answer".into(),
                ));
            }
            let last = value.rsplit(',').next().map(str::trim).unwrap_or("");
            chunked = Some(eq(last, "chunked"));
        }
    }
    let framing = if head_method || code == 204 || code == 304 {
        Framing::Length(0)
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::Close,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::Close,
        }
    };
    let mut head = Vec::with_capacity(head_len + 32);
    let _ = std::io::Write::write_fmt(&mut head, format_args!("HTTP/1.1 {code} "));
    head.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for h in res.headers.iter() {
        let keep_te = eq(h.name, "transfer-encoding") && framing == Framing::Chunked;
        // Beside a transfer-encoding a content-length is wrong (RFC 9112 §6.3): not passed on.
        let dropped = (hop_by_hop(h.name) && !keep_te)
            || (chunked.is_some() && eq(h.name, "content-length"))
            || named.iter().any(|n| eq(n, h.name));
        if !dropped {
            push_header(&mut head, h.name.as_bytes(), h.value);
        }
    }
    if framing == Framing::Close {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    Ok(Some(Parsed::Final(Answer {
        head_len,
        head,
        framing,
        reusable: !close && framing != Framing::Close,
    })))
}

enum Relayed {
    /// The whole body went to the client.
    Done,
    /// Writing to the client failed.
    ClientGone,
    /// The backend's body ended early or failed.
    UpstreamBroke(std::io::Error),
}

/// Write `head` and the answer body (its start already in `up`) to the client. Once the whole
/// body has been read, the upstream connection goes back to `reuse`'s pool when given and the
/// backend sent nothing more, before the last bytes are written: a client that sends its next
/// request as soon as it has the answer finds the connection idle.
async fn relay(
    client: &mut TcpStream,
    upstream: TcpStream,
    up: &mut BytesMut,
    head: &mut Vec<u8>,
    framing: Framing,
    reuse: Option<(&StreamPool, &super::pool::Key)>,
) -> Relayed {
    let mut upstream = Some(upstream);
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut chunks = ChunkScanner::default();
    let mut first = true;
    loop {
        // How much of `up` belongs to this body, and whether it ends here.
        let (take, ends) = match framing {
            Framing::Length(_) => {
                let take = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(up.len());
                remaining -= take as u64;
                (take, remaining == 0)
            }
            Framing::Chunked => match chunks.feed(up) {
                Ok(Some(end)) => (end, true),
                Ok(None) => (up.len(), false),
                Err(()) => {
                    return Relayed::UpstreamBroke(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "malformed chunked body",
                    ));
                }
            },
            Framing::Close => (up.len(), false),
        };
        if ends
            && up.len() == take
            && let (Some((pool, key)), Some(stream)) = (reuse, upstream.take())
        {
            pool.put(key, stream);
        }
        let written = if first {
            first = false;
            // The head and the first body bytes in one write.
            head.extend_from_slice(&up[..take]);
            client.write_all(head).await
        } else if take > 0 {
            client.write_all(&up[..take]).await
        } else {
            Ok(())
        };
        if written.is_err() {
            return Relayed::ClientGone;
        }
        up.clear();
        if ends {
            return Relayed::Done;
        }
        if up.capacity() < 8192 {
            up.reserve(16384);
        }
        let Some(stream) = upstream.as_mut() else {
            return Relayed::Done;
        };
        match stream.read_buf(up).await {
            Ok(0) if framing == Framing::Close => return Relayed::Done,
            Ok(0) => {
                return Relayed::UpstreamBroke(std::io::ErrorKind::UnexpectedEof.into());
            }
            Ok(_) => {}
            Err(error) => return Relayed::UpstreamBroke(error),
        }
    }
}

/// Where a chunked body ends (RFC 9112 §7.1), fed the bytes as they arrive; they are passed on
/// unchanged.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkScanner {
    /// Reading the chunk size (hex), `digits` so far.
    #[default]
    Start,
    Size {
        size: u64,
        digits: u8,
    },
    /// Whitespace after the size: a `;` (extension) or CR must follow.
    SizeWs {
        size: u64,
    },
    /// Skipping a chunk extension until CR.
    Extension {
        size: u64,
    },
    /// After the size line's CR.
    SizeLf {
        size: u64,
    },
    /// Chunk data left.
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    TrailerLine,
    /// After a trailer line's CR.
    TrailerLf,
    /// After the final CR.
    EndLf,
    Done,
}

impl ChunkScanner {
    /// Feed `bytes`: `Some(n)` when the body ends after `n` of them, `None` when it goes on.
    fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, ()> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            *self = match *self {
                Self::Start => Self::Size { size: 0, digits: 0 }.digit(b)?,
                s @ Self::Size { .. } => s.digit(b)?,
                Self::SizeWs { size } => match b {
                    b' ' | b'\t' => Self::SizeWs { size },
                    b';' => Self::Extension { size },
                    b'\r' => Self::SizeLf { size },
                    _ => return Err(()),
                },
                Self::Extension { size } => match b {
                    b'\r' => Self::SizeLf { size },
                    b'\n' => return Err(()),
                    _ => Self::Extension { size },
                },
                Self::SizeLf { size } => match (b, size) {
                    (b'\n', 0) => Self::TrailerStart,
                    (b'\n', n) => Self::Data(n),
                    _ => return Err(()),
                },
                Self::Data(left) => {
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - i);
                    i += n;
                    let left = left - n as u64;
                    *self = if left == 0 {
                        Self::DataCr
                    } else {
                        Self::Data(left)
                    };
                    continue;
                }
                Self::DataCr if b == b'\r' => Self::DataLf,
                Self::DataLf if b == b'\n' => Self::Start,
                Self::DataCr | Self::DataLf => return Err(()),
                // Lines end with CRLF only: a bare LF could end a line for a lenient client and
                // smuggle what follows as a response.
                Self::TrailerStart if b == b'\r' => Self::EndLf,
                Self::TrailerLine if b == b'\r' => Self::TrailerLf,
                Self::TrailerStart | Self::TrailerLine if b == b'\n' => return Err(()),
                Self::TrailerStart | Self::TrailerLine => Self::TrailerLine,
                Self::TrailerLf if b == b'\n' => Self::TrailerStart,
                Self::TrailerLf => return Err(()),
                Self::EndLf if b == b'\n' => Self::Done,
                Self::EndLf | Self::Done => return Err(()),
            };
            i += 1;
            if *self == Self::Done {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// One byte of the size line.
    fn digit(self, b: u8) -> Result<Self, ()> {
        let Self::Size { size, digits } = self else {
            return Err(());
        };
        let value = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            b';' if digits > 0 => return Ok(Self::Extension { size }),
            b' ' | b'\t' if digits > 0 => return Ok(Self::SizeWs { size }),
            b'\r' if digits > 0 => return Ok(Self::SizeLf { size }),
            _ => return Err(()),
        };
        if digits >= 15 {
            return Err(());
        }
        Ok(Self::Size {
            size: size * 16 + u64::from(value),
            digits: digits + 1,
        })
    }
}

/// RIG's 401 with its CORS headers (as [`super::unauthorized`]), counted and logged as on the
/// hyper path; whether the client connection stays open.
async fn unauthorized(proxy: &Proxy, client: &mut TcpStream, refused: &Refused<'_>) -> bool {
    refused.endpoint.counters.count(Status::BadRequest);
    tracing::info!(api = %refused.api.shared.id, endpoint = %refused.endpoint.id, "proxy request without a valid JWT");
    let cors: [(&[u8], &[u8]); 3] = [
        (b"access-control-allow-origin", proxy.cors.as_bytes()),
        (b"access-control-allow-methods", b"*"),
        (b"access-control-allow-headers", b"content-type"),
    ];
    let answer = Local {
        status: "401 Unauthorized",
        headers: &cors,
        body: "Authentication failed.",
        head_method: refused.head_method,
        close: refused.client_close,
    };
    answer.send(client).await
}

/// An answer produced here (502, 504), without its body for `HEAD`; whether the client
/// connection stays open.
async fn reply(client: &mut TcpStream, status: &str, body: &str, plan: &Plan<'_>) -> bool {
    let answer = Local {
        status,
        headers: &[],
        body,
        head_method: plan.head_method,
        close: plan.client_close,
    };
    answer.send(client).await
}

/// A plain-text answer the gateway makes itself.
struct Local<'a> {
    status: &'a str,
    headers: &'a [(&'a [u8], &'a [u8])],
    body: &'a str,
    /// `HEAD`: the head only (its `content-length` still the body's).
    head_method: bool,
    /// Close the connection after it.
    close: bool,
}

impl Local<'_> {
    /// Write it; whether the client connection stays open.
    async fn send(&self, client: &mut TcpStream) -> bool {
        let mut head = Vec::with_capacity(256);
        let _ = std::io::Write::write_fmt(
            &mut head,
            format_args!(
                "HTTP/1.1 {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
                self.status,
                self.body.len()
            ),
        );
        for (name, value) in self.headers {
            push_header(&mut head, name, value);
        }
        if self.close {
            head.extend_from_slice(b"connection: close\r\n");
        }
        head.extend_from_slice(b"\r\n");
        if !self.head_method {
            head.extend_from_slice(self.body.as_bytes());
        }
        client.write_all(&head).await.is_ok() && !self.close
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a backend sends, reading an answer head never panics, and a head it accepts
        /// is rewritten to a head that ends with an empty line and carries no bare CR or LF.
        #[test]
        fn any_answer_bytes_parse_without_panicking(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            head_method in any::<bool>(),
        ) {
            if let Ok(Some(Parsed::Final(answer))) = parse_answer(&bytes, head_method) {
                prop_assert!(answer.head.ends_with(b"\r\n\r\n"));
                prop_assert!(answer.head_len <= bytes.len());
                let text = String::from_utf8_lossy(&answer.head);
                prop_assert!(!text.replace("\r\n", "").contains(['\r', '\n']));
            }
        }

        /// The chunk scanner never panics and finds the same end however the bytes are split.
        #[test]
        fn the_chunk_scanner_is_split_independent(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'0'), Just(b'5'), Just(b'a'), Just(b'\r'), Just(b'\n'), Just(b';'), Just(b'x'), any::<u8>()],
                0..256,
            ),
            split in any::<prop::sample::Index>(),
        ) {
            let at = split.index(bytes.len() + 1);
            let whole = {
                let mut s = ChunkScanner::default();
                s.feed(&bytes)
            };
            let parts = {
                let mut s = ChunkScanner::default();
                match s.feed(&bytes[..at]) {
                    Ok(Some(n)) => Ok(Some(n)),
                    Ok(None) => s.feed(&bytes[at..]).map(|end| end.map(|n| n + at)),
                    Err(()) => Err(()),
                }
            };
            prop_assert_eq!(whole, parts);
        }
    }

    fn scan(parts: &[&[u8]]) -> Result<Option<usize>, ()> {
        let mut s = ChunkScanner::default();
        let mut offset = 0;
        for part in parts {
            if let Some(n) = s.feed(part)? {
                return Ok(Some(offset + n));
            }
            offset += part.len();
        }
        Ok(None)
    }

    #[test]
    fn chunked_bodies_end_where_the_last_chunk_and_trailers_end() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\n\r\n";
        assert_eq!(scan(&[body]), Ok(Some(body.len())));
        // Byte by byte, the same end.
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(scan(&bytes), Ok(Some(body.len())));
        // Trailers, and bytes after the end are not part of it.
        let with_trailer = b"A\r\n0123456789\r\n0\r\nx-sum: 1\r\n\r\nNEXT";
        assert_eq!(scan(&[with_trailer]), Ok(Some(with_trailer.len() - 4)));
        // Not finished yet.
        assert_eq!(scan(&[b"5\r\nhel"]), Ok(None));
        assert_eq!(scan(&[b"0\r\n"]), Ok(None));
        // Malformed.
        assert_eq!(scan(&[b"zz\r\n"]), Err(()));
        assert_eq!(scan(&[b"5\r\nhelloXX"]), Err(()));
        assert_eq!(scan(&[b"\r\n"]), Err(()));
        assert_eq!(scan(&[b"1234567890abcdef0\r\n"]), Err(()));
        // A bare LF in the trailers, and stray bytes after a size.
        assert_eq!(scan(&[b"0\r\n\nHTTP/1.1 200 OK\r\n\r\n"]), Err(()));
        assert_eq!(scan(&[b"0\r\nx: 1\nHTTP/1.1 200 OK\r\n\r\n"]), Err(()));
        assert_eq!(scan(&[b"5 6\r\n"]), Err(()));
        assert_eq!(scan(&[b"5 ;a=b\r\nhello\r\n0\r\n\r\n"]), Ok(Some(20)));
    }

    #[test]
    fn answer_framing_follows_rfc_9112() {
        let framing =
            |head: &str, head_method: bool| match parse_answer(head.as_bytes(), head_method) {
                Ok(Some(Parsed::Final(a))) => Some((a.framing, a.reusable)),
                _ => None,
            };
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false),
            Some((Framing::Length(5), true))
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                false
            ),
            Some((Framing::Chunked, true))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\n\r\n", false),
            Some((Framing::Close, false))
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n",
                false
            ),
            Some((Framing::Length(5), false))
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n", false),
            Some((Framing::Length(5), false))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true),
            Some((Framing::Length(0), true))
        );
        assert_eq!(
            framing(
                "HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n",
                false
            ),
            Some((Framing::Length(0), true))
        );
        assert!(
            framing(
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
                false
            )
            .is_none()
        );
        assert!(framing("HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", false).is_none());
        assert!(framing("HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n", false).is_none());
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n", false),
            Some((Framing::Length(5), true))
        );
        assert!(
            framing(
                "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                false
            )
            .is_none()
        );
        assert!(matches!(
            parse_answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200", false),
            Ok(Some(Parsed::Informational(25)))
        ));
        assert!(matches!(
            parse_answer(b"HTTP/1.1 200 OK\r\ncontent-", false),
            Ok(None)
        ));
        // `connection` cannot take the framing header away.
        let Ok(Some(Parsed::Final(answer))) = parse_answer(
            b"HTTP/1.1 200 OK\r\nconnection: content-length\r\ncontent-length: 5\r\n\r\n",
            false,
        ) else {
            panic!("parsed");
        };
        assert!(String::from_utf8_lossy(&answer.head).contains("content-length: 5\r\n"));
    }

    #[test]
    fn answer_heads_drop_hop_by_hop_headers_but_keep_chunked_framing() {
        let head = "HTTP/1.1 200 OK\r\nconnection: keep-alive, x-private\r\nx-private: 1\r\nkeep-alive: 5\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\nx-kept: 2\r\n\r\n";
        let Ok(Some(Parsed::Final(answer))) = parse_answer(head.as_bytes(), false) else {
            panic!("parsed");
        };
        let text = String::from_utf8(answer.head).expect("utf-8");
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-kept: 2\r\n\r\n"
        );
        assert_eq!(answer.head_len, head.len());
    }
}
