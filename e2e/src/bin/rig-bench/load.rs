//! Load: events published over HTTP (`POST /v3/messages` on the internal port) or produced to the
//! Kafka topic the data plane consumes, either as fast as allowed by a delivery window or at a
//! fixed rate; and the measurements of each scenario.
//!
//! **Delivery window.** With a window `W > 0`, publishers never get more than `W` events ahead of
//! the slowest open connection (the orchestrator polls the clients' counters every 10 ms). `W`
//! is below the data plane's per-connection queue (256), so the rate measured is the rate the data
//! plane sustains without closing anyone as a slow consumer. `W = 0` publishes open-loop, as fast
//! as the data plane answers, and the slow-consumer policy shows in `rig_queue_drops_total`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::net::TcpStream;

use crate::process::{Clients, DataPlane, Stats, cpu_seconds};
use crate::unix_ns;

/// The event type every connection subscribes to.
pub const EVENT_TYPE: &str = "bench.tick";

/// Target size of one event's JSON.
const EVENT_BYTES: usize = 200;

/// How long undelivered events may take to arrive after publishing stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where events come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `POST /v3/messages` with this many concurrent keep-alive connections.
    Http { publishers: usize },
    /// Produced to `topic` on `brokers`.
    Kafka { brokers: String, topic: String },
}

impl Source {
    /// Short name for the tables.
    pub fn name(&self) -> String {
        match self {
            Self::Http { publishers } => format!("HTTP /v3/messages ×{publishers}"),
            Self::Kafka { .. } => "Kafka".to_owned(),
        }
    }
}

/// A ~200-byte structured CloudEvent whose data carries its send time in `t` (unix ns); its type
/// is [`EVENT_TYPE`], or with `types > 0` one of `types` subtypes in turn (see `client`).
pub fn event(id: u64, types: usize) -> String {
    let event_type =
        crate::client::event_type(EVENT_TYPE, types, usize::try_from(id).unwrap_or_default());
    let head = format!(
        r#"{{"specversion":"1.0","type":"{event_type}","source":"/rig-bench","id":"{id}","data":{{"t":{},"pad":""#,
        unix_ns()
    );
    let pad = EVENT_BYTES.saturating_sub(head.len() + 3);
    format!("{head}{}\"}}}}", "x".repeat(pad))
}

/// Admission of publishers: sequence numbers up to `allowed`.
#[derive(Debug)]
struct Flow {
    issued: AtomicU64,
    allowed: AtomicU64,
    stop: AtomicBool,
    ok: AtomicU64,
    failed: AtomicU64,
}

impl Flow {
    fn new(allowed: u64) -> Self {
        Self {
            issued: AtomicU64::new(0),
            allowed: AtomicU64::new(allowed),
            stop: AtomicBool::new(false),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// The next sequence number once the window allows it; `None` once stopped.
    async fn next(&self) -> Option<u64> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return None;
            }
            let cur = self.issued.load(Ordering::Relaxed);
            if cur < self.allowed.load(Ordering::Relaxed) {
                if self
                    .issued
                    .compare_exchange(cur, cur + 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    return Some(cur);
                }
                continue;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }

    fn done(&self, ok: bool) {
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What a throughput run measured.
#[derive(Debug, Clone)]
pub struct Throughput {
    /// Where events came from.
    pub source: String,
    /// The delivery window (0: open loop).
    pub window: u64,
    /// Connections open when publishing started.
    pub open_before: u64,
    /// Connections open at the end.
    pub open_after: u64,
    /// Events accepted by the data plane (HTTP 202) or acknowledged by Kafka.
    pub published: u64,
    /// Publish requests refused or failed.
    pub publish_failed: u64,
    /// Events received by all clients.
    pub frames: u64,
    /// Seconds from the first publish to the last event received.
    pub seconds: f64,
    /// `rig_queue_drops_total` increase (connections closed as slow consumers).
    pub drops: u64,
    /// Data-plane CPU use, in cores (1.0 = one core busy).
    pub dataplane_cores: f64,
    /// CPU use of all client processes, in cores.
    pub client_cores: f64,
    /// Fewest and most events on one open connection.
    pub per_conn: (u64, u64),
}

impl Throughput {
    /// Frames delivered per second.
    pub fn rate(&self) -> f64 {
        self.frames as f64 / self.seconds.max(1e-9)
    }

    /// Delivered / (published × connections open at the start).
    pub fn delivered_share(&self) -> f64 {
        self.frames as f64 / ((self.published * self.open_before).max(1)) as f64
    }
}

/// Publish from `source` for `duration` with `window` (module docs) and measure delivery.
pub async fn throughput(
    dp: &DataPlane,
    clients: &mut Clients,
    source: &Source,
    duration: Duration,
    window: u64,
) -> Result<Throughput> {
    clients.reset(false).await?;
    let before = clients.stats().await?;
    let drops_before = dp.metric("rig_queue_drops_total").await?;
    let flow = Arc::new(Flow::new(if window == 0 { u64::MAX } else { window }));
    let cpu = CpuMeter::start(dp.pid, &clients.pids())?;
    let start_ns = unix_ns();
    let start = Instant::now();
    let publishers = spawn_publishers(dp.internal, source, &flow, false, 0)?;
    while start.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if window > 0 {
            let stats = clients.stats().await?;
            flow.allowed.store(stats.min + window, Ordering::Relaxed);
        }
    }
    flow.stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await.context("publisher task")??;
    }
    let published = flow.ok.load(Ordering::Relaxed);
    let after = drain(clients, published).await?;
    let (dataplane_cores, client_cores) = cpu.cores(dp.pid, &clients.pids())?;
    let drops_after = dp.metric("rig_queue_drops_total").await?;
    Ok(Throughput {
        source: source.name(),
        window,
        open_before: before.open,
        open_after: after.open,
        published,
        publish_failed: flow.failed.load(Ordering::Relaxed),
        frames: after.frames,
        seconds: after.last_ns.saturating_sub(start_ns) as f64 / 1e9,
        drops: (drops_after - drops_before).max(0.0) as u64,
        dataplane_cores,
        client_cores,
        per_conn: (after.min, after.max),
    })
}

/// What a latency run measured.
#[derive(Debug, Clone)]
pub struct Latency {
    /// Events per second produced.
    pub rate: f64,
    /// Connections open.
    pub open: u64,
    /// Connections each event goes to.
    pub fanout: u64,
    /// Events produced.
    pub published: u64,
    /// Delivered / expected.
    pub delivered_share: f64,
    /// Sampled connections' latencies, sorted (ns).
    pub samples: Vec<u64>,
    /// Data-plane CPU use, in cores.
    pub dataplane_cores: f64,
    /// `rig_queue_drops_total` increase.
    pub drops: u64,
}

impl Latency {
    /// The `q` quantile in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.samples.is_empty() {
            return f64::NAN;
        }
        let idx = ((self.samples.len() as f64 - 1.0) * q).round() as usize;
        self.samples[idx.min(self.samples.len() - 1)] as f64 / 1e6
    }
}

/// Produce to Kafka at a fixed `rate` for `duration`; latency on the sampled connections. With
/// `types > 0` the events rotate over the subtypes, each reaching `1/types` of the connections.
pub async fn latency(
    dp: &DataPlane,
    clients: &mut Clients,
    source: &Source,
    duration: Duration,
    rate: f64,
    types: usize,
) -> Result<Latency> {
    clients.reset(true).await?;
    let before = clients.stats().await?;
    let drops_before = dp.metric("rig_queue_drops_total").await?;
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let flow = Arc::new(Flow::new(0));
    let cpu = CpuMeter::start(dp.pid, &clients.pids())?;
    let publishers = spawn_publishers(dp.internal, source, &flow, true, types)?;
    let start = tokio::time::Instant::now();
    for i in 1..=total {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        flow.allowed.store(i, Ordering::Relaxed);
    }
    // Let the last events be issued, then stop the publishers.
    let issue_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while flow.issued.load(Ordering::Relaxed) < total
        && tokio::time::Instant::now() < issue_deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    flow.stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await.context("publisher task")??;
    }
    let published = flow.ok.load(Ordering::Relaxed);
    let after = drain(clients, published).await?;
    let (dataplane_cores, _) = cpu.cores(dp.pid, &clients.pids())?;
    let mut samples = clients.samples().await?;
    clients.reset(false).await?;
    samples.sort_unstable();
    let drops_after = dp.metric("rig_queue_drops_total").await?;
    Ok(Latency {
        rate,
        open: before.open,
        fanout: before.open / types.max(1) as u64,
        published,
        delivered_share: after.frames as f64 * types.max(1) as f64
            / ((published * before.open).max(1)) as f64,
        samples,
        dataplane_cores,
        drops: (drops_after - drops_before).max(0.0) as u64,
    })
}

/// Wait until every open connection got all `published` events, or nothing arrives for 2 s, or
/// the drain timeout; the final counters.
async fn drain(clients: &mut Clients, published: u64) -> Result<Stats> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut last = clients.stats().await?;
    let mut unchanged_since = Instant::now();
    loop {
        if last.min >= published || Instant::now() > deadline {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = clients.stats().await?;
        if now.frames != last.frames {
            unchanged_since = Instant::now();
        } else if unchanged_since.elapsed() > Duration::from_secs(2) {
            return Ok(now);
        }
        last = now;
    }
}

/// CPU time of the data plane and the clients over an interval.
struct CpuMeter {
    start: Instant,
    dataplane: f64,
    clients: f64,
}

impl CpuMeter {
    fn start(dp: u32, clients: &[u32]) -> Result<Self> {
        Ok(Self {
            start: Instant::now(),
            dataplane: cpu_seconds(dp)?,
            clients: clients
                .iter()
                .map(|p| cpu_seconds(*p))
                .sum::<Result<f64>>()?,
        })
    }

    fn cores(&self, dp: u32, clients: &[u32]) -> Result<(f64, f64)> {
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        let dataplane = cpu_seconds(dp)? - self.dataplane;
        let clients = clients
            .iter()
            .map(|p| cpu_seconds(*p))
            .sum::<Result<f64>>()?
            - self.clients;
        Ok((dataplane / wall, clients / wall))
    }
}

fn spawn_publishers(
    internal: SocketAddr,
    source: &Source,
    flow: &Arc<Flow>,
    low_latency: bool,
    types: usize,
) -> Result<Vec<tokio::task::JoinHandle<Result<()>>>> {
    match source {
        Source::Http { publishers } => Ok((0..*publishers)
            .map(|_| tokio::spawn(http_publisher(internal, flow.clone(), types)))
            .collect()),
        Source::Kafka { brokers, topic } => {
            let producer: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .set("acks", "1")
                // Batching helps throughput; for latency every event goes out at once.
                .set("linger.ms", if low_latency { "0" } else { "2" })
                .create()
                .context("Kafka producer")?;
            Ok(vec![tokio::spawn(kafka_publisher(
                producer,
                topic.clone(),
                flow.clone(),
                types,
            ))])
        }
    }
}

/// One keep-alive HTTP/1.1 connection posting events one after the other.
async fn http_publisher(internal: SocketAddr, flow: Arc<Flow>, types: usize) -> Result<()> {
    let stream = TcpStream::connect(internal).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    while let Some(seq) = flow.next().await {
        let req = http::Request::post("/v3/messages")
            .header(http::header::HOST, internal.to_string())
            .header(http::header::CONTENT_TYPE, "application/cloudevents+json")
            .body(Full::new(Bytes::from(event(seq, types))))?;
        let ok = match sender.send_request(req).await {
            Ok(res) => {
                let status = res.status();
                let _ = res.into_body().collect().await;
                status == http::StatusCode::ACCEPTED
            }
            Err(error) => {
                eprintln!("publish failed: {error}");
                flow.done(false);
                return Err(error.into());
            }
        };
        flow.done(ok);
    }
    Ok(())
}

/// Produce events as the flow allows, without waiting for each acknowledgement.
async fn kafka_publisher(
    producer: FutureProducer,
    topic: String,
    flow: Arc<Flow>,
    types: usize,
) -> Result<()> {
    let mut pending = FuturesUnordered::new();
    loop {
        let seq = tokio::select! {
            seq = flow.next() => seq,
            Some(result) = pending.next(), if !pending.is_empty() => {
                flow.done(matches!(result, Ok(Ok(_))));
                continue;
            }
        };
        let Some(seq) = seq else { break };
        let payload = event(seq, types);
        match producer.send_result(FutureRecord::<(), _>::to(&topic).payload(&payload)) {
            Ok(delivery) => pending.push(delivery),
            Err((error, _)) => {
                eprintln!("produce failed: {error}");
                flow.done(false);
            }
        }
    }
    while let Some(result) = pending.next().await {
        flow.done(matches!(result, Ok(Ok(_))));
    }
    Ok(())
}
