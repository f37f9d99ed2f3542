//! `rig-bench http-events`: HTTP-published events through Kafka (issue 13), against two real
//! release data planes on the test broker; prints a markdown section.
//!
//! 1. **Latency across pods.** An SSE client on data plane 1; events `POST`ed to data plane 0 at
//!    `--rate` events/s (open loop, over 8 keep-alive connections) for `--duration` s; each event
//!    carries its send time, the client records publish → client latency. Then the same with
//!    events produced directly to Kafka at the same rate, read by the same client: the two rows
//!    side by side.
//! 2. **Acknowledged throughput.** `--publishers` keep-alive connections to data plane 0, each
//!    POSTing one event after the other (each answered 202 only after the broker's
//!    acknowledgement) for `--duration` s: accepted POSTs/s.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::Full;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::process::{self, DataPlane};
use crate::{deadline_poll, unix_ns};

const EVENT_TYPE: &str = "bench.http";
const SUBS: &str = "subscriptions=%5B%7B%22eventType%22%3A%22bench.http%22%7D%5D";
const LATENCY_CONNECTIONS: usize = 8;

/// What `rig-bench http-events` does.
#[derive(Debug, Clone)]
pub struct HttpEventsArgs {
    /// The `rig-dataplane` binary.
    pub dataplane: PathBuf,
    /// Bootstrap servers of the test broker.
    pub brokers: String,
    /// Events per second in the latency phases.
    pub rate: u64,
    /// Seconds per phase.
    pub duration: u64,
    /// Keep-alive publishers in the throughput phase.
    pub publishers: usize,
}

fn event(i: u64) -> String {
    serde_json::json!({
        "specversion": "1.0", "type": EVENT_TYPE, "source": "/bench", "id": format!("b{i}"),
        "partitionkey": format!("k{}", i % 16), "data": {"t": unix_ns(), "i": i}
    })
    .to_string()
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn keep_alive(addr: SocketAddr) -> Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn post(sender: &mut Sender, addr: SocketAddr, body: String) -> Result<u16> {
    sender.ready().await?;
    let req = http::Request::post("/_rig/v1/events")
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/cloudevents+json")
        .body(Full::new(Bytes::from(body)))?;
    let res = sender.send_request(req).await?;
    let status = res.status().as_u16();
    http_body_util::BodyExt::collect(res.into_body()).await?;
    Ok(status)
}

/// An SSE client recording publish → receive latencies (ns) of every event.
async fn sse_latencies(
    addr: SocketAddr,
    samples: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET /_rig/v1/connection/sse?{SUBS} HTTP/1.1\r\nhost: bench\r\naccept: text/event-stream\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut lines = BufReader::new(stream).lines();
    while !stop.load(Ordering::Relaxed) {
        let Ok(line) = tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await
        else {
            continue;
        };
        let Some(line) = line? else {
            bail!("the SSE stream ended");
        };
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let now = unix_ns();
        let value: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
        if value["type"] == EVENT_TYPE
            && let Some(t) = value["data"]["t"].as_u64()
        {
            samples.lock().await.push(now.saturating_sub(t));
        }
    }
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .map_or(f64::NAN, |ns| *ns as f64 / 1e6)
}

/// Run the phases; the markdown section.
pub async fn run(args: HttpEventsArgs) -> Result<String> {
    let topic = format!("bench-http-{}", std::process::id());
    rig_e2e::kafka::create_topics(&args.brokers, &[&topic], 3).await?;
    let env = vec![
        ("KAFKA_BROKERS".to_owned(), args.brokers.clone()),
        ("KAFKA_SOURCE_TOPICS".to_owned(), topic.clone()),
        (
            "RIG_TOKEN_KEY".to_owned(),
            "http-events-bench-key-0123456789".to_owned(),
        ),
        ("RIG_CONNECTION_QUEUE".to_owned(), "4096".to_owned()),
    ];
    let dp0 = DataPlane::start(
        &args.dataplane,
        &env,
        true,
        &process::log_dir().join("http-events-0.log"),
    )
    .await?;
    let dp1 = DataPlane::start(
        &args.dataplane,
        &env,
        true,
        &process::log_dir().join("http-events-1.log"),
    )
    .await?;
    let mut out = String::new();
    writeln!(
        out,
        "### HTTP-published events through Kafka (`http-events.sh`)\n"
    )?;
    writeln!(
        out,
        "Two data planes on the test broker (topic of 3 partitions, `acks=all`, idempotent producer); one SSE client on data plane 1.\n"
    )?;
    writeln!(
        out,
        "| path (at {} events/s for {} s) | received | p50 | p99 | max |",
        args.rate, args.duration
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|")?;

    for via_http in [true, false] {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(sse_latencies(dp1.inbound, samples.clone(), stop.clone()));
        deadline_poll(
            "the SSE client registered",
            Duration::from_secs(30),
            || async {
                dp1.metric("rig_connections{transport=\"sse\"}")
                    .await
                    .is_ok_and(|n| n >= 1.0)
            },
        )
        .await?;
        let total = args.rate * args.duration;
        let interval = Duration::from_nanos(1_000_000_000 / args.rate.max(1));
        let started = tokio::time::Instant::now();
        if via_http {
            // Open loop over a few keep-alive connections: event i leaves at its slot whatever
            // the answers to earlier ones.
            let mut tasks = Vec::new();
            for c in 0..LATENCY_CONNECTIONS as u64 {
                let addr = dp0.inbound;
                tasks.push(tokio::spawn(async move {
                    let mut sender = keep_alive(addr).await?;
                    let mut refused = 0u64;
                    let mut i = c;
                    while i < total {
                        tokio::time::sleep_until(started + interval * i as u32).await;
                        if post(&mut sender, addr, event(i)).await? != 202 {
                            refused += 1;
                        }
                        i += LATENCY_CONNECTIONS as u64;
                    }
                    anyhow::Ok(refused)
                }));
            }
            for task in tasks {
                let refused = task.await??;
                if refused > 0 {
                    bail!("{refused} POSTs were not accepted");
                }
            }
        } else {
            let producer: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", &args.brokers)
                .set("linger.ms", "1")
                .set("acks", "all")
                .set("enable.idempotence", "true")
                .create()?;
            // Warm: connected and the topic's metadata known before the clock runs, as the data
            // plane's producer is after the first phase.
            let warm = serde_json::json!({"specversion": "1.0", "type": "bench.warm", "source": "/bench", "id": "warm"}).to_string();
            producer
                .send(
                    FutureRecord::to(&topic).key("warm").payload(&warm),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| anyhow::anyhow!("warm-up: {e}"))?;
            let started = tokio::time::Instant::now();
            for i in 0..total {
                tokio::time::sleep_until(started + interval * i as u32).await;
                let body = event(i);
                let key = format!("k{}", i % 16);
                let _ = producer.send_result(FutureRecord::to(&topic).key(&key).payload(&body));
            }
            let _ = tokio::task::spawn_blocking(move || {
                rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30))
            })
            .await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        reader.await??;
        let mut samples = samples.lock().await.clone();
        samples.sort_unstable();
        writeln!(
            out,
            "| {} | {} of {total} | {:.2} ms | {:.2} ms | {:.2} ms |",
            if via_http {
                "`POST` to data plane 0 → Kafka → SSE on data plane 1"
            } else {
                "produced to Kafka directly → SSE on data plane 1"
            },
            samples.len(),
            percentile(&samples, 0.50),
            percentile(&samples, 0.99),
            percentile(&samples, 1.0),
        )?;
    }

    // Throughput: each publisher waits for its 202 before the next POST.
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.duration);
    let cpu_before = process::cpu_seconds(dp0.pid)?;
    let mut tasks = Vec::new();
    for p in 0..args.publishers as u64 {
        let (addr, accepted, refused) = (dp0.inbound, accepted.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = keep_alive(addr).await?;
            let mut i = p << 32;
            while tokio::time::Instant::now() < deadline {
                if post(&mut sender, addr, event(i)).await? == 202 {
                    accepted.fetch_add(1, Ordering::Relaxed);
                } else {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await?.context("publisher")?;
    }
    let cpu = process::cpu_seconds(dp0.pid)? - cpu_before;
    let accepted = accepted.load(Ordering::Relaxed);
    writeln!(
        out,
        "\n**Acknowledged throughput**: {} keep-alive publishers POSTing to data plane 0, each waiting for its 202 (the broker's acknowledgement) before the next: **{:.0} accepted POSTs/s** over {} s ({} refused), data plane CPU {:.1} µs per accepted POST.\n",
        args.publishers,
        accepted as f64 / args.duration as f64,
        args.duration,
        refused.load(Ordering::Relaxed),
        cpu * 1e6 / accepted.max(1) as f64,
    )?;
    dp0.stop().await?;
    dp1.stop().await?;
    Ok(out)
}
