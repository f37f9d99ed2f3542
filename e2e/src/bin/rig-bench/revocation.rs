//! `rig-bench revocation`: how long a revocation takes to close a live connection inside one data
//! plane (issue 5; DESIGN §7's `Blacklist` row measures the same across pods).
//!
//! A fresh release data plane starts (`JWT_SECRET_KEY` set, Kafka off; one per value of the
//! comma-separated `--background`). The benchmark opens `--background` SSE connections, each with
//! a JWT of its own session, and keeps them open the whole time, so every revocation happens among many other sessions' connections. Then, one at
//! a time, `--revocations` sessions (after `--warmup` unmeasured ones): open one SSE connection
//! with the session's JWT, wait for its greetings (so it is registered and has joined its
//! session), take the time, send `POST /v3/session-blacklist` (`validityInSeconds`
//! `--validity`) on a keep-alive connection to the internal port, and read the SSE connection
//! until it ends. Three times are recorded per revocation, all from just before the POST is
//! written: the client has read `rig.session_killed`, the client has read the end of the stream
//! (the chunked body's last chunk, or the socket closing), the POST's answer arrived. At the end
//! the background connections must all still be open (`rig_connections`) and the data plane must
//! count exactly the measured kills (`rig_sessions_killed_total`), so a fast but wrong revocation
//! fails the run instead of producing a number.
//!
//! The benchmark process is a client like the others in `rig-bench`: hand-written HTTP/1.1 over
//! `TcpStream`, no client library in the measured path but hyper for the POST.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::{self, DataPlane};
use crate::wire::SseReader;
use crate::{Transport, deadline_poll};

/// The HMAC key the data plane verifies the benchmark's tokens with.
const SECRET: &str = "rig-bench-revocation-secret";
/// Background connections opened at once.
const OPEN_CONCURRENCY: usize = 100;
/// Bound on any single step (opening, one revocation).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// The target of issue 5: p99 under 50 ms.
const TARGET_P99_MS: f64 = 50.0;

/// What `rig-bench revocation` does.
#[derive(Debug, Clone)]
pub struct RevocationArgs {
    /// Other sessions' SSE connections kept open throughout; one run (fresh data plane) per value.
    pub background: Vec<usize>,
    /// Measured revocations.
    pub revocations: usize,
    /// Unmeasured revocations first (connection set-up, allocator and page warm-up).
    pub warmup: usize,
    /// `validityInSeconds` of each revocation.
    pub validity: u64,
    /// The `rig-dataplane` binary.
    pub dataplane: PathBuf,
}

/// The times of one revocation, from just before the POST was written.
#[derive(Debug, Clone, Copy)]
struct Sample {
    killed: Duration,
    ended: Duration,
    answered: Duration,
}

/// A signed HS256 JWT for `session` (its `jti`), valid for an hour.
fn token(session: &str) -> Result<String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"exp": exp, "jti": session}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )?)
}

/// An SSE connection past its two greeting events.
struct Sse {
    stream: TcpStream,
    reader: SseReader,
    /// Bytes read after the greetings (to find `rig.session_killed`).
    tail: Vec<u8>,
}

/// Open an SSE connection with `jwt` and read its response head and two greeting events.
async fn open_sse(addr: SocketAddr, jwt: &str) -> Result<Sse> {
    let mut stream = TcpStream::connect(addr).await.context("connecting")?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET /_rig/v1/connection/sse?jwt={jwt} HTTP/1.1\r\nHost: {addr}\r\n\
         Accept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = vec![0u8; 4096];
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
    let head = String::from_utf8_lossy(&buf[..head_end]);
    if !head.starts_with("HTTP/1.1 200") {
        bail!("SSE connect refused: {head:?}");
    }
    let mut reader = SseReader::new(false);
    let mut events = 0;
    reader.feed(&buf[head_end..filled], |_| events += 1);
    while events < 2 {
        let n = stream.read(&mut buf).await?;
        if n == 0 || reader.done() {
            bail!("stream ended before its greetings");
        }
        reader.feed(&buf[..n], |_| events += 1);
    }
    Ok(Sse {
        stream,
        reader,
        tail: Vec::new(),
    })
}

impl Sse {
    /// Read until the stream ends; the times (since `start`) at which `rig.session_killed` and
    /// the end were read.
    async fn until_end(&mut self, start: Instant) -> Result<(Duration, Duration)> {
        let mut buf = [0u8; 4096];
        let mut killed = None;
        loop {
            let n = self.stream.read(&mut buf).await?;
            let now = start.elapsed();
            if n > 0 {
                self.tail.extend_from_slice(&buf[..n]);
                self.reader.feed(&buf[..n], |_| {});
                if killed.is_none()
                    && self
                        .tail
                        .windows(b"rig.session_killed".len())
                        .any(|w| w == b"rig.session_killed")
                {
                    killed = Some(now);
                }
            }
            if n == 0 || self.reader.done() {
                let killed = killed.context("the stream ended without rig.session_killed")?;
                return Ok((killed, now));
            }
        }
    }
}

/// One run: the background connections, the samples, and how long the revocations took.
#[derive(Debug)]
struct Run {
    background: usize,
    samples: Vec<Sample>,
    wall: Duration,
}

/// Run the benchmark; returns the markdown section.
pub async fn run(args: RevocationArgs) -> Result<String> {
    let env = vec![("JWT_SECRET_KEY".to_owned(), SECRET.to_owned())];
    let mut runs = Vec::new();
    for &background in &args.background {
        let log = process::log_dir().join("rig-bench-dataplane-revocation.log");
        let dp = DataPlane::start(&args.dataplane, &env, false, &log).await?;
        eprintln!(
            "rig-bench: data plane pid {} inbound {} (log {})",
            dp.pid,
            dp.inbound,
            log.display()
        );
        let result = measure(&dp, &args, background).await;
        dp.stop().await?;
        runs.push(result?);
    }
    Ok(report(&args, &runs))
}

async fn measure(dp: &DataPlane, args: &RevocationArgs, background: usize) -> Result<Run> {
    // The other sessions' connections, open throughout.
    let opening = Instant::now();
    let tokens: Vec<String> = (0..background)
        .map(|i| token(&format!("background-{i}")))
        .collect::<Result<_>>()?;
    let background: Vec<Sse> = futures::stream::iter(tokens)
        .map(|jwt| async move {
            tokio::time::timeout(STEP_TIMEOUT, open_sse(dp.inbound, &jwt))
                .await
                .context("opening timed out")?
        })
        .buffer_unordered(OPEN_CONCURRENCY)
        .collect::<Vec<Result<Sse>>>()
        .await
        .into_iter()
        .collect::<Result<_>>()
        .context("opening the background connections")?;
    let expected = background.len() as f64;
    deadline_poll(
        "the data plane to count the background connections",
        STEP_TIMEOUT,
        || async {
            dp.connections(Transport::Sse)
                .await
                .is_ok_and(|n| n == expected)
        },
    )
    .await?;
    eprintln!(
        "rig-bench: {} background SSE connections open in {:.1} s",
        background.len(),
        opening.elapsed().as_secs_f64()
    );

    let api = TcpStream::connect(dp.internal)
        .await
        .context("connecting to the internal API")?;
    api.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(api)).await?;
    tokio::spawn(conn);

    let wall = Instant::now();
    let mut samples = Vec::with_capacity(args.revocations);
    for i in 0..args.warmup + args.revocations {
        let session = format!("revoked-{i}");
        let mut sse = open_sse(dp.inbound, &token(&session)?).await?;
        let sample = tokio::time::timeout(
            STEP_TIMEOUT,
            revoke(&mut sender, dp.internal, &session, args.validity, &mut sse),
        )
        .await
        .with_context(|| format!("revocation {i} did not finish in {STEP_TIMEOUT:?}"))??;
        if i >= args.warmup {
            samples.push(sample);
        }
    }
    let wall = wall.elapsed();

    // Honesty checks: nothing else was closed, and the data plane counted every kill.
    let open = dp.connections(Transport::Sse).await?;
    if open != expected {
        bail!(
            "{open} SSE connections open after the revocations; expected the {expected} background ones"
        );
    }
    let killed = dp.metric("rig_sessions_killed_total").await?;
    let revoked = (args.warmup + args.revocations) as f64;
    if killed != revoked {
        bail!("the data plane killed {killed} connections for {revoked} revocations");
    }
    drop(background);
    Ok(Run {
        background: expected as usize,
        samples,
        wall,
    })
}

/// One revocation of `session`, whose only connection is `sse`.
async fn revoke(
    sender: &mut SendRequest<Full<Bytes>>,
    internal: SocketAddr,
    session: &str,
    validity: u64,
    sse: &mut Sse,
) -> Result<Sample> {
    let body = serde_json::json!({"sessionId": session, "validityInSeconds": validity}).to_string();
    let req = http::Request::post("/v3/session-blacklist")
        .header(http::header::HOST, internal.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    sender.ready().await?;
    let start = Instant::now();
    let post = async {
        let res = sender.send_request(req).await?;
        let answered = start.elapsed();
        let status = res.status();
        let _ = res.into_body().collect().await?;
        if status != http::StatusCode::CREATED {
            bail!("POST /v3/session-blacklist answered {status}");
        }
        Ok::<_, anyhow::Error>(answered)
    };
    let (answered, seen) = tokio::join!(post, sse.until_end(start));
    let (killed, ended) = seen?;
    Ok(Sample {
        killed,
        ended,
        answered: answered?,
    })
}

/// The `q` quantile (nearest rank) of `values`, in milliseconds.
fn quantile_ms(values: &mut [Duration], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_unstable();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1].as_secs_f64() * 1000.0
}

fn report(args: &RevocationArgs, runs: &[Run]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Revocation → SSE connection closed, one process\n\n\
         | background SSE connections (other sessions) | revocations | measured until | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | target p99 < {TARGET_P99_MS} ms |\n\
         |---|---|---|---|---|---|---|---|"
    );
    type Pick = fn(&Sample) -> Duration;
    let rows: [(&str, Pick); 3] = [
        ("client read the end of the stream", |s| s.ended),
        ("client read `rig.session_killed`", |s| s.killed),
        ("POST answered (201)", |s| s.answered),
    ];
    for run in runs {
        for (what, pick) in rows {
            let mut values: Vec<Duration> = run.samples.iter().map(pick).collect();
            let p99 = quantile_ms(&mut values, 0.99);
            let _ = writeln!(
                out,
                "| {} | {} | {what} | {:.2} | {:.2} | {p99:.2} | {:.2} | {} |",
                run.background,
                run.samples.len(),
                quantile_ms(&mut values, 0.5),
                quantile_ms(&mut values, 0.9),
                quantile_ms(&mut values, 1.0),
                if what.starts_with("POST") {
                    "—"
                } else if p99 < TARGET_P99_MS {
                    "meets"
                } else {
                    "**misses**"
                },
            );
        }
    }
    let walls: Vec<String> = runs
        .iter()
        .map(|r| format!("{:.2} s with {}", r.wall.as_secs_f64(), r.background))
        .collect();
    let _ = writeln!(
        out,
        "\nOne revocation at a time, each of a session with one SSE connection (registered and \
         greeted before the clock starts); times from just before `POST /v3/session-blacklist` is \
         written (keep-alive connection to the internal port) until the client has read the event, \
         the end of the stream, or the POST's answer. {} unmeasured revocations first; a fresh data \
         plane per background size. Opening the revoked sessions' connections and revoking them \
         took {} background connections. After each run, all background connections were still \
         open and `rig_sessions_killed_total` equalled the number of revocations.",
        args.warmup,
        walls.join(", ")
    );
    out
}
