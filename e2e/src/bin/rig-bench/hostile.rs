//! `rig-bench hostile`: the measured acceptance of issue 12 (hostile and unlucky clients), against
//! the real release data plane; prints a markdown section.
//!
//! 1. **Resume memory.** A data plane (Kafka off) gets `--events` HTTP-published events of 1 KiB;
//!    the window's own size is the growth of RSS they cause. Then `--resumers` SSE connections
//!    resume from the oldest position (the greeting token taken before the first event) and never
//!    read a byte: the RSS growth over the empty process must stay under 2× the window's.
//! 2. **Broker outage.** A data plane reads a topic of a private broker (`--kafka-run`, stopped and
//!    started with `e2e/env/kafka.sh`); `--readers` SSE clients read and resume with
//!    `Last-Event-ID` whenever they are closed; a producer sends `--rate` events/s of 1 KiB all
//!    along, buffering while the broker is down. RSS (mean of 5 readings) before a 30 s outage and
//!    after the backlog has drained must be within 10 %.
//! 3. **Idle sockets.** `--idle` sockets connect and send nothing while a healthy client opens a
//!    fresh connection for `GET /_rig/health` every 20 ms; every idle socket must be closed by the
//!    data plane within `RIG_HEAD_TIMEOUT_MS` (plus 1 s) and the healthy client's p99 stay under
//!    50 ms.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::deadline_poll;
use crate::process::{self, DataPlane, Memory};

const EVENT_TYPE: &str = "hostile.tick";
const SUBS: &str = "subscriptions=%5B%7B%22eventType%22%3A%22hostile.tick%22%7D%5D";
const HEAD_TIMEOUT_MS: u64 = 10_000;
const OUTAGE: Duration = Duration::from_secs(30);
/// The replay window in the outage scenario: filled within the warm-up at the default rate.
const OUTAGE_WINDOW: u64 = 2000;
/// Producing before the first reading.
const WARM_UP: Duration = Duration::from_secs(30);

/// What `rig-bench hostile` does.
#[derive(Debug, Clone)]
pub struct HostileArgs {
    /// The `rig-dataplane` binary.
    pub dataplane: PathBuf,
    /// Events in the window (scenario 1).
    pub events: usize,
    /// Resuming connections that never read (scenario 1).
    pub resumers: usize,
    /// Reading clients during the outage (scenario 2).
    pub readers: usize,
    /// Events per second during the outage scenario.
    pub rate: u64,
    /// The private broker's `RIG_RUN` (scenario 2; skipped when empty).
    pub kafka_run: Option<PathBuf>,
    /// `e2e/env/kafka.sh`.
    pub kafka_sh: PathBuf,
    /// Idle sockets (scenario 3).
    pub idle: usize,
}

/// Run every scenario; the markdown section.
pub async fn run(args: HostileArgs) -> Result<String> {
    let mut out = String::new();
    writeln!(out, "### Hostile and unlucky clients (`hostile.sh`)\n")?;
    if args.events > 0 && args.resumers > 0 {
        resume_memory(&args, &mut out).await?;
    }
    match &args.kafka_run {
        Some(run) if args.readers > 0 => outage(&args, run, &mut out).await?,
        Some(_) => {}
        None => writeln!(out, "Broker outage: skipped (no `--kafka-run`).\n")?,
    }
    if args.idle > 0 {
        idle_sockets(&args, &mut out).await?;
    }
    Ok(out)
}

fn payload(i: u64) -> String {
    serde_json::json!({
        "specversion": "1.0", "type": EVENT_TYPE, "source": "/bench", "id": format!("h{i}"),
        "data": {"i": i, "filler": "x".repeat(900)}
    })
    .to_string()
}

fn log(path: &str) -> PathBuf {
    process::log_dir().join(path)
}

fn mib(kib: i64) -> f64 {
    kib as f64 / 1024.0
}

/// Send an SSE connect request on a new connection, resuming from `last_event_id`.
async fn sse_connect(addr: SocketAddr, last_event_id: Option<&str>) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    let resume = last_event_id.map_or(String::new(), |id| format!("last-event-id: {id}\r\n"));
    let request = format!(
        "GET /_rig/v1/connection/sse?{SUBS} HTTP/1.1\r\nhost: bench\r\naccept: text/event-stream\r\n{resume}\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    Ok(stream)
}

async fn resume_memory(args: &HostileArgs, out: &mut String) -> Result<()> {
    let env = vec![
        ("RIG_REPLAY_WINDOW".to_owned(), args.events.to_string()),
        (
            "RIG_TOKEN_KEY".to_owned(),
            "hostile-bench-key-0123456789".to_owned(),
        ),
    ];
    let dp = DataPlane::start(&args.dataplane, &env, false, &log("hostile-resume.log")).await?;
    // The oldest position: the greeting's token, before any event.
    let stream = sse_connect(dp.inbound, None).await?;
    let mut lines = BufReader::new(stream).lines();
    let token = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("greeting")??
            .context("stream ended before the greeting")?;
        if let Some(id) = line.strip_prefix("id: ") {
            break id.to_owned();
        }
    };
    drop(lines);
    let empty = Memory::settled(dp.pid).await?;
    for i in 0..args.events as u64 {
        let (status, _, _) = rig_e2e::http::post(
            dp.internal,
            "/v3/messages",
            "application/cloudevents+json",
            payload(i),
        )
        .await?;
        if status != 202 {
            bail!("publishing answered {status}");
        }
    }
    let filled = Memory::settled(dp.pid).await?;
    let window = filled.rss as i64 - empty.rss as i64;
    let mut sockets = Vec::with_capacity(args.resumers);
    for _ in 0..args.resumers {
        // Sent, never read.
        sockets.push(sse_connect(dp.inbound, Some(&token)).await?);
    }
    deadline_poll(
        "every resumer registered",
        Duration::from_secs(60),
        || async {
            dp.metric("rig_connections{transport=\"sse\"}")
                .await
                .is_ok_and(|n| n >= args.resumers as f64)
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resumed = Memory::settled(dp.pid).await?;
    let hits = dp.metric("rig_replay_hits_total").await.unwrap_or(f64::NAN);
    let growth = resumed.rss as i64 - empty.rss as i64;
    let ratio = growth as f64 / window.max(1) as f64;
    writeln!(
        out,
        "**Resume memory** ({} events of ~1 KiB in the window, {} connections resuming from the oldest position and never reading; {hits} replays started):\n",
        args.events, args.resumers
    )?;
    writeln!(out, "| | RSS | over the empty process |")?;
    writeln!(out, "|---|---:|---:|")?;
    writeln!(out, "| empty | {:.1} MiB | |", mib(empty.rss as i64))?;
    writeln!(
        out,
        "| window filled | {:.1} MiB | {:.1} MiB = the window ({:.0} B per event) |",
        mib(filled.rss as i64),
        mib(window),
        window as f64 * 1024.0 / args.events as f64
    )?;
    writeln!(
        out,
        "| + {} stuck resumers | {:.1} MiB | {:.1} MiB = **{ratio:.2}× the window** (must be < 2×: {}) |\n",
        args.resumers,
        mib(resumed.rss as i64),
        mib(growth),
        if ratio < 2.0 { "met" } else { "NOT met" }
    )?;
    drop(sockets);
    dp.stop().await
}

/// A reading SSE client that resumes with its last `id:` whenever its stream ends.
async fn reader(
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    reconnects: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut last: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = sse_connect(addr, last.as_deref()).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut lines = BufReader::new(stream).lines();
        // Heartbeats arrive every 15 s, so a minute of silence is a dead connection.
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await
        {
            if let Some(id) = line.strip_prefix("id: ") {
                last = Some(id.to_owned());
            } else if line == format!("event: {EVENT_TYPE}") {
                received.fetch_add(1, Ordering::Relaxed);
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

async fn mean_rss(pid: u32) -> Result<u64> {
    let mut sum = 0;
    for _ in 0..5 {
        sum += Memory::of(pid)?.rss;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(sum / 5)
}

fn kafka_sh(args: &HostileArgs, run: &PathBuf, verb: &str) -> Result<()> {
    let status = std::process::Command::new("bash")
        .arg(&args.kafka_sh)
        .arg(verb)
        .env("RIG_RUN", run)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("kafka.sh {verb} failed");
    }
    Ok(())
}

async fn outage(args: &HostileArgs, run: &PathBuf, out: &mut String) -> Result<()> {
    let env_file = std::fs::read_to_string(run.join("env")).context("the private broker's env")?;
    let brokers = env_file
        .lines()
        .find_map(|l| l.strip_prefix("KAFKA_BROKERS="))
        .context("KAFKA_BROKERS")?
        .to_owned();
    let topic = format!("hostile-{}", std::process::id());
    rig_e2e::kafka::create_topics(&brokers, &[&topic], 2).await?;
    // A window the producer fills before the first reading (steady state), so what is measured
    // is what the outage leaves behind, not the window filling up.
    let env = vec![
        ("KAFKA_BROKERS".to_owned(), brokers.clone()),
        ("KAFKA_SOURCE_TOPICS".to_owned(), topic.clone()),
        ("RIG_REPLAY_WINDOW".to_owned(), OUTAGE_WINDOW.to_string()),
        // Allocator settings of the bench's own environment apply (to compare them).
        (
            "MALLOC_ARENA_MAX".to_owned(),
            std::env::var("MALLOC_ARENA_MAX").unwrap_or_default(),
        ),
        (
            "RIG_TOKEN_KEY".to_owned(),
            "hostile-bench-key-0123456789".to_owned(),
        ),
    ];
    let dp = DataPlane::start(&args.dataplane, &env, true, &log("hostile-outage.log")).await?;
    let received = Arc::new(AtomicU64::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..args.readers {
        readers.push(tokio::spawn(reader(
            dp.inbound,
            received.clone(),
            reconnects.clone(),
            stop.clone(),
        )));
    }
    deadline_poll(
        "every reader connected",
        Duration::from_secs(60),
        || async {
            dp.metric("rig_connections{transport=\"sse\"}")
                .await
                .is_ok_and(|n| n >= args.readers as f64)
        },
    )
    .await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("message.timeout.ms", "300000")
        .set("linger.ms", "5")
        .create()?;
    let producing = Arc::new(AtomicBool::new(true));
    let sent = Arc::new(AtomicU64::new(0));
    let producer_task = {
        let (producing, sent, topic, rate) =
            (producing.clone(), sent.clone(), topic.clone(), args.rate);
        tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
            let mut i = 0u64;
            while producing.load(Ordering::Relaxed) {
                pace.tick().await;
                let body = payload(i);
                let key = format!("k{}", i % 16);
                // Enqueued; librdkafka buffers it while the broker is down.
                if producer
                    .send_result(FutureRecord::to(&topic).key(&key).payload(&body))
                    .is_ok()
                {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            let _ = tokio::task::spawn_blocking(move || {
                rdkafka::producer::Producer::flush(&producer, Duration::from_secs(60))
            })
            .await;
        })
    };
    tokio::time::sleep(WARM_UP).await;
    let before = mean_rss(dp.pid).await?;
    let drops_before = dp.metric("rig_queue_drops_total").await.unwrap_or(0.0);
    kafka_sh(args, run, "stop")?;
    tokio::time::sleep(OUTAGE).await;
    kafka_sh(args, run, "start")?;
    // The backlog drains; then steady state again.
    let drained = Instant::now();
    deadline_poll(
        "the backlog delivered",
        Duration::from_secs(120),
        || async {
            dp.metric("rig_kafka_consumer_lag_messages")
                .await
                .is_ok_and(|lag| lag < 50.0)
        },
    )
    .await?;
    let drain = drained.elapsed();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let after = mean_rss(dp.pid).await?;
    producing.store(false, Ordering::Relaxed);
    producer_task.await?;
    let drops = dp.metric("rig_queue_drops_total").await.unwrap_or(0.0) - drops_before;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.abort();
    }
    let change = (after as f64 - before as f64) / before as f64 * 100.0;
    writeln!(
        out,
        "**Broker outage** ({} SSE readers resuming whenever closed, {} events/s of ~1 KiB produced all along, `RIG_REPLAY_WINDOW={OUTAGE_WINDOW}` full before the first reading, broker stopped {} s): RSS before {:.1} MiB, after {:.1} MiB: **{change:+.1} %** (must be within ±10 %: {}). Backlog delivered {:.1} s after the broker was back; {drops} slow-consumer closes, {} reconnects, {} events received of {} sent × {} readers.\n",
        args.readers,
        args.rate,
        OUTAGE.as_secs(),
        mib(before as i64),
        mib(after as i64),
        if change.abs() <= 10.0 {
            "met"
        } else {
            "NOT met"
        },
        drain.as_secs_f64(),
        reconnects.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
        args.readers,
    )?;
    dp.stop().await
}

async fn probe(addr: SocketAddr) -> Result<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /_rig/health HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        bail!("health answered {:?}", String::from_utf8_lossy(&answer));
    }
    Ok(started.elapsed())
}

async fn idle_sockets(args: &HostileArgs, out: &mut String) -> Result<()> {
    let env = vec![(
        "RIG_HEAD_TIMEOUT_MS".to_owned(),
        HEAD_TIMEOUT_MS.to_string(),
    )];
    let dp = DataPlane::start(&args.dataplane, &env, false, &log("hostile-idle.log")).await?;
    let probing = Arc::new(AtomicBool::new(true));
    let prober = {
        let probing = probing.clone();
        let addr = dp.inbound;
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            while probing.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_secs(5), probe(addr)).await {
                    Ok(Ok(latency)) => latencies.push(latency),
                    _ => failures += 1,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (latencies, failures)
        })
    };
    let mut idle = Vec::with_capacity(args.idle);
    for _ in 0..args.idle {
        let stream = TcpStream::connect(dp.inbound).await?;
        let opened = Instant::now();
        idle.push(tokio::spawn(async move {
            let mut stream = stream;
            let mut buf = [0u8; 64];
            // Sends nothing; waits for the data plane to close it (bounded).
            let closed = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut buf)).await;
            closed.ok().map(|_| opened.elapsed())
        }));
    }
    let mut longest = Duration::ZERO;
    let mut still_open = 0;
    for task in idle {
        match task.await? {
            Some(after) => longest = longest.max(after),
            None => still_open += 1,
        }
    }
    probing.store(false, Ordering::Relaxed);
    let (mut latencies, failures) = prober.await?;
    latencies.sort();
    let pct = |p: f64| -> f64 {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    let (p50, p99) = (pct(0.50), pct(0.99));
    let closed_in_time =
        still_open == 0 && longest <= Duration::from_millis(HEAD_TIMEOUT_MS + 1000);
    writeln!(
        out,
        "**Idle sockets** ({} sockets that send nothing, `RIG_HEAD_TIMEOUT_MS={HEAD_TIMEOUT_MS}`): all closed by the data plane, the last {:.1} s after it opened ({still_open} still open after 60 s: {}); a healthy client meanwhile ({} fresh connections, `GET /_rig/health`): p50 {p50:.2} ms, **p99 {p99:.2} ms** (must be < 50 ms: {}), {failures} failed.\n",
        args.idle,
        longest.as_secs_f64(),
        if closed_in_time { "met" } else { "NOT met" },
        latencies.len(),
        if p99 < 50.0 && failures == 0 {
            "met"
        } else {
            "NOT met"
        },
    )?;
    dp.stop().await
}
