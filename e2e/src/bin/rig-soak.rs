//! `rig-soak`: clients that must not lose an event while the cluster under them changes (the kind
//! scenarios of `e2e/kind/test.sh`: a rolling update, a pod deleted with `--force`).
//!
//! ```text
//! rig-soak --inbound 127.0.0.1:30400 --brokers 127.0.0.1:30092 --topic T [--type soak.tick]
//!          [--sse 500] [--ws 500] [--rate 20] --ready FILE --stop FILE [--drain-secs 120]
//! ```
//!
//! Opens `--sse` SSE and `--ws` WebSocket clients on `--inbound`, each subscribed to `--type`;
//! once all are greeted, writes `--ready` and produces `--rate` events per second to `--topic`
//! (each with its sequence number) until `--stop` exists. A client whose stream ends, errs or is
//! silent for longer than `--silence-secs` (the data plane's heartbeat must be shorter) reconnects
//! at once and resumes: SSE with `Last-Event-ID` (the resume token of the last event), WebSocket
//! with `last_event_id` (the last event's id). After the stop, every client must hold every event
//! exactly once within `--drain-secs`. Prints one JSON line: clients, events, lost, duplicated,
//! reconnects, clean and broken stream ends, and the time from a stream's end to the greeting of
//! its new connection (p50, p99, max). Exits 0 only with nothing lost and nothing duplicated.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rig_e2e::http::form_encode;
use rig_e2e::sse::{self, Connect};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone)]
struct Args {
    inbound: SocketAddr,
    brokers: String,
    topic: String,
    event_type: String,
    sse: usize,
    ws: usize,
    rate: u64,
    ready: PathBuf,
    stop: PathBuf,
    drain: Duration,
    silence: Duration,
}

fn args() -> Result<Args> {
    let mut map = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(key) = it.next() {
        let key = key
            .strip_prefix("--")
            .with_context(|| format!("unexpected argument {key:?}"))?
            .to_owned();
        let value = it
            .next()
            .with_context(|| format!("--{key} needs a value"))?;
        map.insert(key, value);
    }
    let get = |k: &str| map.get(k).cloned();
    let num = |k: &str, d: u64| -> Result<u64> {
        get(k).map_or(Ok(d), |v| v.parse().with_context(|| format!("--{k} {v:?}")))
    };
    Ok(Args {
        inbound: get("inbound").context("--inbound")?.parse()?,
        brokers: get("brokers").context("--brokers")?,
        topic: get("topic").context("--topic")?,
        event_type: get("type").unwrap_or_else(|| "soak.tick".into()),
        sse: usize::try_from(num("sse", 500)?)?,
        ws: usize::try_from(num("ws", 500)?)?,
        rate: num("rate", 20)?.max(1),
        ready: get("ready").context("--ready")?.into(),
        stop: get("stop").context("--stop")?.into(),
        drain: Duration::from_secs(num("drain-secs", 120)?),
        silence: Duration::from_secs(num("silence-secs", 8)?),
    })
}

/// What one client saw.
#[derive(Debug, Default)]
struct Seen {
    /// How often each sequence number arrived (index = seq - 1).
    counts: Vec<u32>,
    /// Milliseconds from a stream's end to the next connection's greeting.
    resumes: Vec<u64>,
    clean_ends: u64,
    broken_ends: u64,
    /// Attempts refused or ended before their greeting.
    refused: u64,
}

impl Seen {
    fn record(&mut self, seq: u64) {
        let i = usize::try_from(seq.saturating_sub(1)).unwrap_or(usize::MAX);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
    }
}

/// Shared progress of all clients.
#[derive(Debug, Default)]
struct Shared {
    greeted: AtomicUsize,
    stopping: std::sync::atomic::AtomicBool,
    produced: AtomicU64,
}

/// How a stream ended.
enum End {
    Clean,
    Broken,
}

fn seq_of(data: &str, event_type: &str) -> Option<(u64, String)> {
    let value: serde_json::Value = serde_json::from_str(data).ok()?;
    if value["type"] != event_type {
        return None;
    }
    Some((
        value["data"]["seq"].as_u64()?,
        value["id"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// One SSE client, reconnecting until the run ends.
async fn sse_client(
    args: Arc<Args>,
    shared: Arc<Shared>,
    seen: Arc<Mutex<Seen>>,
    done: Arc<AtomicU64>,
) {
    let subs = form_encode(&format!(r#"[{{"eventType":"{}"}}]"#, args.event_type));
    let path = format!("/_rig/v1/connection/sse?subscriptions={subs}");
    let mut resume: Option<String> = None;
    let mut ended_at: Option<Instant> = None;
    let mut first = true;
    while done.load(Ordering::Relaxed) == 0 {
        let headers: Vec<(&str, &str)> = resume
            .as_deref()
            .map(|r| vec![("last-event-id", r)])
            .unwrap_or_default();
        let mut client = match sse::connect(args.inbound, &path, &headers).await {
            Ok(Connect::Stream(c)) => c,
            _ => {
                lock(&seen).refused += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut greeted = false;
        let end = loop {
            match client.next(args.silence).await {
                Ok(Some(event)) => {
                    if event.event == "rig.connection.create" {
                        greeted = true;
                        if first {
                            shared.greeted.fetch_add(1, Ordering::Relaxed);
                            first = false;
                        }
                        if let Some(t) = ended_at.take() {
                            let ms = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);
                            lock(&seen).resumes.push(ms);
                        }
                    }
                    if let Some((seq, _)) = seq_of(&event.data, &args.event_type) {
                        lock(&seen).record(seq);
                    }
                    if let Some(id) = event.id {
                        resume = Some(id);
                    }
                }
                Ok(None) => break End::Clean,
                Err(_) => break End::Broken,
            }
            if done.load(Ordering::Relaxed) != 0 {
                return;
            }
        };
        if ended(&seen, greeted, end, &mut ended_at) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Count how a stream ended; `true` when it was refused (ended before its greeting): the caller
/// backs off before the next attempt.
fn ended(seen: &Mutex<Seen>, greeted: bool, end: End, ended_at: &mut Option<Instant>) -> bool {
    let mut s = lock(seen);
    if !greeted {
        s.refused += 1;
        return true;
    }
    *ended_at = Some(Instant::now());
    match end {
        End::Clean => s.clean_ends += 1,
        End::Broken => s.broken_ends += 1,
    }
    false
}

/// One WebSocket client, reconnecting until the run ends.
async fn ws_client(
    args: Arc<Args>,
    shared: Arc<Shared>,
    seen: Arc<Mutex<Seen>>,
    done: Arc<AtomicU64>,
) {
    let subs = form_encode(&format!(r#"[{{"eventType":"{}"}}]"#, args.event_type));
    let mut resume: Option<String> = None;
    let mut ended_at: Option<Instant> = None;
    let mut first = true;
    while done.load(Ordering::Relaxed) == 0 {
        let mut url = format!(
            "ws://{}/_rig/v1/connection/ws?subscriptions={subs}",
            args.inbound
        );
        if let Some(id) = &resume {
            url.push_str(&format!("&last_event_id={}", form_encode(id)));
        }
        let Ok(Ok((mut ws, _))) =
            tokio::time::timeout(args.silence, tokio_tungstenite::connect_async(url)).await
        else {
            lock(&seen).refused += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut greeted = false;
        let end = loop {
            match tokio::time::timeout(args.silence, ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let text = text.as_str();
                    if text.contains("\"rig.connection.create\"") {
                        greeted = true;
                        if first {
                            shared.greeted.fetch_add(1, Ordering::Relaxed);
                            first = false;
                        }
                        if let Some(t) = ended_at.take() {
                            let ms = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);
                            lock(&seen).resumes.push(ms);
                        }
                    }
                    if let Some((seq, id)) = seq_of(text, &args.event_type) {
                        lock(&seen).record(seq);
                        resume = Some(id);
                    }
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) => break End::Clean,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) | Err(_) => break End::Broken,
            }
            if done.load(Ordering::Relaxed) != 0 {
                return;
            }
        };
        if ended(&seen, greeted, end, &mut ended_at) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn run(args: Args) -> Result<bool> {
    let args = Arc::new(args);
    let shared = Arc::new(Shared::default());
    let done = Arc::new(AtomicU64::new(0));
    let total = args.sse + args.ws;
    let mut all = Vec::with_capacity(total);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let seen = Arc::new(Mutex::new(Seen::default()));
        all.push(seen.clone());
        let (a, s, d) = (args.clone(), shared.clone(), done.clone());
        tasks.push(if i < args.sse {
            tokio::spawn(sse_client(a, s, seen, d))
        } else {
            tokio::spawn(ws_client(a, s, seen, d))
        });
        // Spread the connects a little (the NodePort path has a userland proxy).
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let started = Instant::now();
    while shared.greeted.load(Ordering::Relaxed) < total {
        if started.elapsed() > Duration::from_secs(180) {
            bail!(
                "only {} of {total} clients connected",
                shared.greeted.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()
        .context("producer")?;
    std::fs::write(&args.ready, "ready\n").context("writing --ready")?;
    eprintln!(
        "rig-soak: {total} clients greeted; producing {} events/s",
        args.rate
    );
    // Event ids unique to this run: WebSocket clients resume by event id, and a topic may hold
    // an earlier run's events.
    let run = rig_e2e::unique_name("soak");
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / args.rate));
    let mut seq = 0u64;
    while !args.stop.exists() {
        tick.tick().await;
        seq += 1;
        let payload = serde_json::json!({
            "specversion": "1.0", "type": args.event_type, "source": "/rig-soak",
            "id": format!("{run}-{seq}"), "data": {"seq": seq}
        })
        .to_string();
        producer
            .send(
                FutureRecord::to(&args.topic).key("soak").payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("producing event {seq}: {e}"))?;
        shared.produced.store(seq, Ordering::Relaxed);
    }
    shared.stopping.store(true, Ordering::Relaxed);
    eprintln!("rig-soak: produced {seq} events; waiting for every client to hold them all");
    let drain_start = Instant::now();
    let complete = |s: &Seen| {
        s.counts.len() >= usize::try_from(seq).unwrap_or(usize::MAX)
            && s.counts.iter().take(seq as usize).all(|c| *c >= 1)
    };
    while drain_start.elapsed() < args.drain && !all.iter().all(|s| complete(&lock(s))) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    done.store(1, Ordering::Relaxed);
    for t in &tasks {
        t.abort();
    }
    let (mut lost, mut duplicated, mut clean, mut broken, mut refused) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut resumes = Vec::new();
    for s in &all {
        let s = lock(s);
        for i in 0..usize::try_from(seq).unwrap_or(0) {
            match s.counts.get(i).copied().unwrap_or(0) {
                0 => lost += 1,
                n => duplicated += u64::from(n - 1),
            }
        }
        resumes.extend_from_slice(&s.resumes);
        clean += s.clean_ends;
        broken += s.broken_ends;
        refused += s.refused;
    }
    resumes.sort_unstable();
    let report = serde_json::json!({
        "clients": total, "sse": args.sse, "ws": args.ws, "events": seq,
        "lost": lost, "duplicated": duplicated,
        "reconnects": resumes.len(), "clean_ends": clean, "broken_ends": broken,
        "refused_attempts": refused,
        "resume_ms": {"p50": percentile(&resumes, 50.0), "p99": percentile(&resumes, 99.0),
                      "max": resumes.last().copied().unwrap_or(0)},
    });
    println!("{report}");
    Ok(lost == 0 && duplicated == 0 && seq > 0)
}

fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rig-soak: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rig-soak: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("rig-soak: {e:#}");
            ExitCode::from(2)
        }
    }
}
