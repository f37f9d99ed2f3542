//! A client process (`rig-bench client …`): opens its share of the connections from its own
//! source address, counts the events each connection receives, and answers the orchestrator's
//! one-line commands on stdin:
//!
//! - `stats` → `stats frames=<since reset> min=<fewest on an open connection> max=… open=…
//!   closed=… last_ns=<unix ns of the latest event>`
//! - `reset` → `ok` (counters to zero; connections stay open)
//! - `sample on|off` → `ok` (record latencies on sampled connections, or not)
//! - `samples` → `samples <ns> <ns> …` (receive − send of each sampled event since the last call)
//! - `quit` → the process exits (its sockets close)
//!
//! The first line it writes is `ready ok=<n> failed=<n>` once every connection got its two
//! greeting events (so the data plane registered it) or failed. A connection holds one task with a
//! 4 KiB read buffer; only one in `sample_every` parses timestamps.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use crate::wire::{SseReader, WsReader};
use crate::{Transport, unix_ns};

/// Marks a closed connection in its counter (counts stay far below 2^31).
const CLOSED: u32 = 1 << 31;

/// How long opening all connections may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(180);

/// What one client process does.
#[derive(Debug, Clone)]
pub struct ClientArgs {
    /// The data plane's inbound address.
    pub addr: SocketAddr,
    /// SSE or WebSocket.
    pub transport: Transport,
    /// Connections to open.
    pub count: usize,
    /// Source address of this process's connections.
    pub local_ip: IpAddr,
    /// The event type every connection subscribes to (when `event_types` is 0).
    pub event_type: String,
    /// When not 0: connection `g` (its index over all processes) subscribes to
    /// `<event_type>.<g % event_types>` instead, so each event reaches a subset.
    pub event_types: usize,
    /// Index over all processes of this process's first connection.
    pub index_offset: usize,
    /// Every n-th connection records latencies.
    pub sample_every: usize,
    /// Connections being opened at once.
    pub concurrency: usize,
}

#[derive(Debug)]
struct Shared {
    frames: AtomicU64,
    last_ns: AtomicU64,
    ready: AtomicU64,
    failed: AtomicU64,
    closed: AtomicU64,
    per_conn: Vec<AtomicU32>,
    sampling: AtomicBool,
    samples: Mutex<Vec<u64>>,
    first_error: Mutex<Option<String>>,
}

/// Run a client process until `quit` or the end of stdin.
pub async fn run(args: ClientArgs) -> Result<()> {
    let shared = Arc::new(Shared {
        frames: AtomicU64::new(0),
        last_ns: AtomicU64::new(0),
        ready: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        closed: AtomicU64::new(0),
        per_conn: (0..args.count).map(|_| AtomicU32::new(0)).collect(),
        sampling: AtomicBool::new(false),
        samples: Mutex::new(Vec::new()),
        first_error: Mutex::new(None),
    });
    let opening = Arc::new(Semaphore::new(args.concurrency.max(1)));
    for idx in 0..args.count {
        let shared = shared.clone();
        let opening = opening.clone();
        let args = args.clone();
        tokio::spawn(async move {
            let sampled = args.sample_every > 0 && idx % args.sample_every == 0;
            let request = request(&args, idx);
            let error =
                connection(&args, &shared, idx, sampled, request.as_bytes(), &opening).await;
            shared.per_conn[idx].fetch_or(CLOSED, Ordering::Relaxed);
            shared.closed.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = error {
                let mut first = shared
                    .first_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                first.get_or_insert_with(|| format!("{error:#}"));
            }
        });
    }

    let started = tokio::time::Instant::now();
    loop {
        let done = shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed);
        if done >= args.count as u64 || started.elapsed() > OPEN_TIMEOUT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut out = tokio::io::stdout();
    if let Some(error) = shared
        .first_error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
    {
        eprintln!("client {}: first connection error: {error}", args.local_ip);
    }
    let line = format!(
        "ready ok={} failed={}\n",
        shared.ready.load(Ordering::Relaxed),
        args.count as u64 - shared.ready.load(Ordering::Relaxed)
    );
    out.write_all(line.as_bytes()).await?;
    out.flush().await?;

    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    while let Some(command) = commands.next_line().await? {
        let answer = match command.trim() {
            "stats" => stats(&shared),
            "reset" => {
                for c in &shared.per_conn {
                    // Keep the closed mark, zero the count.
                    let _ = c.fetch_and(CLOSED, Ordering::Relaxed);
                }
                shared.frames.store(0, Ordering::Relaxed);
                shared.last_ns.store(0, Ordering::Relaxed);
                "ok".to_owned()
            }
            "sample on" | "sample off" => {
                shared
                    .sampling
                    .store(command.trim() == "sample on", Ordering::Relaxed);
                "ok".to_owned()
            }
            "samples" => {
                let taken = std::mem::take(
                    &mut *shared
                        .samples
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner),
                );
                let mut line = String::with_capacity(taken.len() * 9 + 8);
                line.push_str("samples");
                for s in taken {
                    line.push(' ');
                    line.push_str(&s.to_string());
                }
                line
            }
            "quit" => break,
            other => format!("error unknown command {other:?}"),
        };
        out.write_all(answer.as_bytes()).await?;
        out.write_all(b"\n").await?;
        out.flush().await?;
    }
    Ok(())
}

fn stats(shared: &Shared) -> String {
    let mut min = u64::MAX;
    let mut max = 0;
    let mut open = 0u64;
    for c in &shared.per_conn {
        let v = c.load(Ordering::Relaxed);
        if v & CLOSED == 0 {
            open += 1;
            min = min.min(u64::from(v));
            max = max.max(u64::from(v));
        }
    }
    if open == 0 {
        min = 0;
    }
    format!(
        "stats frames={} min={min} max={max} open={open} closed={} last_ns={}",
        shared.frames.load(Ordering::Relaxed),
        shared.closed.load(Ordering::Relaxed),
        shared.last_ns.load(Ordering::Relaxed),
    )
}

/// The event type connection `g` (its index over all processes) subscribes to.
pub fn event_type(base: &str, types: usize, g: usize) -> String {
    if types == 0 {
        base.to_owned()
    } else {
        format!("{base}.{}", g % types)
    }
}

/// The request line and headers of connection `idx`: an SSE GET, or a WebSocket upgrade done by
/// hand.
fn request(args: &ClientArgs, idx: usize) -> String {
    let event_type = event_type(&args.event_type, args.event_types, args.index_offset + idx);
    let subs = serde_json::json!([{ "eventType": event_type }]).to_string();
    let subs: String = subs
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    match args.transport {
        Transport::Sse => format!(
            "GET /_rig/v1/connection/sse?subscriptions={subs} HTTP/1.1\r\nHost: {}\r\n\
             Accept: text/event-stream\r\n\r\n",
            args.addr
        ),
        Transport::Ws => format!(
            "GET /_rig/v1/connection/ws?subscriptions={subs} HTTP/1.1\r\nHost: {}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            args.addr
        ),
    }
}

/// The event reader of either transport.
enum Reader {
    Sse(SseReader),
    Ws(WsReader),
}

impl Reader {
    fn feed(&mut self, bytes: &[u8], event: impl FnMut(Option<u64>)) {
        match self {
            Self::Sse(r) => r.feed(bytes, event),
            Self::Ws(r) => r.feed(bytes, event),
        }
    }

    fn done(&self) -> bool {
        match self {
            Self::Sse(r) => r.done(),
            Self::Ws(r) => r.done(),
        }
    }
}

/// One connection: open it (holding an opening permit until its greetings arrived), then count
/// events until the server ends it. Returns when the connection is closed.
async fn connection(
    args: &ClientArgs,
    shared: &Shared,
    idx: usize,
    sampled: bool,
    request: &[u8],
    opening: &Semaphore,
) -> Result<()> {
    let permit = opening.acquire().await.context("opening semaphore")?;
    let mut buf = [0u8; 4096];
    let opened = tokio::time::timeout(Duration::from_secs(60), open(args, request, &mut buf))
        .await
        .context("opening timed out")
        .and_then(|r| r);
    let (mut stream, head_end, filled) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            return Err(error);
        }
    };
    let mut reader = match args.transport {
        Transport::Sse => Reader::Sse(SseReader::new(sampled)),
        Transport::Ws => Reader::Ws(WsReader::new(sampled)),
    };
    let mut permit = Some(permit);
    let mut greeted = 0u64;
    let mut start = head_end;
    let mut n = filled;
    loop {
        let now = unix_ns();
        let mut count = 0u32;
        let sampling = sampled && shared.sampling.load(Ordering::Relaxed);
        let mut local: Vec<u64> = Vec::new();
        reader.feed(&buf[start..n], |stamp| {
            count += 1;
            if sampling && let Some(t) = stamp {
                local.push(now.saturating_sub(t));
            }
        });
        if count > 0 {
            shared.per_conn[idx].fetch_add(count, Ordering::Relaxed);
            shared.frames.fetch_add(u64::from(count), Ordering::Relaxed);
            shared.last_ns.fetch_max(now, Ordering::Relaxed);
            if !local.is_empty() {
                shared
                    .samples
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(local);
            }
            if permit.is_some() {
                greeted += u64::from(count);
                if greeted >= 2 {
                    permit = None;
                    shared.ready.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if reader.done() {
            return Ok(());
        }
        start = 0;
        n = stream.read(&mut buf).await.context("reading")?;
        if n == 0 {
            if permit.is_some() {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                bail!("closed before the greetings");
            }
            return Ok(());
        }
    }
}

/// Connect from `local_ip`, send the request, read the response head into `buf`: the stream, the
/// end of the head, and how many bytes of `buf` are filled.
async fn open(
    args: &ClientArgs,
    request: &[u8],
    buf: &mut [u8],
) -> Result<(TcpStream, usize, usize)> {
    let socket = match args.local_ip {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket
        .bind(SocketAddr::new(args.local_ip, 0))
        .with_context(|| format!("binding {}", args.local_ip))?;
    let mut stream = socket.connect(args.addr).await.context("connecting")?;
    stream.set_nodelay(true)?;
    stream
        .write_all(request)
        .await
        .context("sending the request")?;
    let mut filled = 0;
    let head_end = loop {
        if filled == buf.len() {
            bail!("response head larger than {} bytes", buf.len());
        }
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            bail!("closed before the response head");
        }
        filled += n;
        if let Some(pos) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap_or_default();
    match args.transport {
        Transport::Sse => {
            if status != "200" || !head.contains("transfer-encoding: chunked") {
                bail!("unexpected SSE response head: {head:?}");
            }
        }
        Transport::Ws => {
            if status != "101" {
                bail!("unexpected WebSocket response head: {head:?}");
            }
        }
    }
    Ok((stream, head_end, filled))
}
