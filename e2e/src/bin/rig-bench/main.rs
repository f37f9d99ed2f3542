//! `rig-bench`: benchmarks of the data plane's connection memory, fan-out throughput and Kafka →
//! client latency against the real `rig-dataplane` binary (build it with `--release`). Not a test:
//! it prints numbers. `e2e/bench/run.sh` builds everything and runs it.
//!
//! ```text
//! rig-bench run [--connections 10000] [--clients 2] [--duration 10] [--publishers 4]
//!               [--window 128] [--transports sse,ws] [--latency-rates auto,10]
//!               [--open-loop true|false] [--kafka true|false]
//!               [--subset-types 100] [--subset-rate 200]
//! rig-bench client …   (a client process; started by `run`)
//! rig-bench revocation [--background 1000,10000] [--revocations 100] [--warmup 5] [--validity 600]
//!                      (revocation → SSE connection closed, in one process; see `revocation`)
//! rig-bench responder --brokers B --requests T --responses T [--partitions 1]
//!                      (the Kafka responder of e2e/bench/proxy.sh)
//! ```
//!
//! For each transport a fresh data plane starts (Kafka on, consuming a new topic); its memory is
//! read; the clients open the connections (spread over `--clients` processes, each from its own
//! 127.0.0.x address), every one subscribed to `bench.tick`; memory is read again once the data
//! plane counts them all. Then, with all connections open: HTTP-published throughput, Kafka
//! throughput (both with a delivery window, see `load`), Kafka → client latency at fixed rates
//! (`auto`: half the Kafka rate just measured, DESIGN §7's load point; every event goes to every
//! connection), and last an open-loop HTTP burst (which may close connections as slow consumers,
//! so it comes last). Finally the clients reconnect with connection `g` subscribed to
//! `bench.tick.<g % subset-types>`, and Kafka → client latency is measured at `--subset-rate`
//! events/s rotating over those types (each event reaches `1/subset-types` of the connections;
//! every connection records latencies).

mod client;
mod hostile;
mod http_events;
mod load;
mod process;
mod responder;
mod revocation;
mod wire;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use crate::client::ClientArgs;
use crate::load::{EVENT_TYPE, Latency, Source, Throughput};
use crate::process::{Clients, DataPlane, Memory};

/// DESIGN §7 floors.
const MUST_KIB_PER_CONN: f64 = 8.0;
const AIM_KIB_PER_CONN: f64 = 4.0;
const MUST_FRAMES_PER_SEC: f64 = 300_000.0;
const MUST_P99_MS: f64 = 20.0;

/// The streaming transports measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Server-Sent Events.
    Sse,
    /// WebSocket.
    Ws,
}

impl Transport {
    /// The name used by the data plane's metrics and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sse => "sse",
            Self::Ws => "ws",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "sse" => Ok(Self::Sse),
            "ws" => Ok(Self::Ws),
            other => bail!("unknown transport {other:?} (sse, ws)"),
        }
    }
}

/// Nanoseconds since the Unix epoch (the clock clients and producers share on this machine).
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Poll `check` every 100 ms until it is true; an error naming `what` after `timeout`.
pub async fn deadline_poll<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("client") => client_main(&args[1..]),
        Some("run") => run_main(&args[1..]),
        Some("revocation") => revocation_main(&args[1..]),
        Some("hostile") => hostile_main(&args[1..]),
        Some("http-events") => http_events_main(&args[1..]),
        Some("responder") => responder_main(&args[1..]),
        _ => Err(anyhow::anyhow!(
            "usage: rig-bench run [--connections N] [--clients P] [--duration S] \
             [--publishers N] [--window W] [--transports sse,ws] [--latency-rates auto,R…] \
             [--open-loop true|false] [--kafka true|false] [--subset-types N] [--subset-rate R]\n\
             rig-bench revocation [--background N,…] [--revocations N] [--warmup N] [--validity S]\n\
             rig-bench responder --brokers B --requests TOPIC --responses TOPIC [--partitions N]\n\
             rig-bench hostile [--events N] [--resumers N] [--readers N] [--rate N] [--idle N] \
             [--kafka-run DIR --kafka-sh PATH]\n\
             rig-bench http-events [--rate 1000] [--duration 10] [--publishers 64]"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rig-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--key value` pairs.
fn options(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut it = args.iter();
    while let Some(key) = it.next() {
        let key = key
            .strip_prefix("--")
            .with_context(|| format!("expected --option, got {key:?}"))?;
        let value = it
            .next()
            .with_context(|| format!("--{key} needs a value"))?;
        out.insert(key.to_owned(), value.clone());
    }
    Ok(out)
}

fn opt<T: std::str::FromStr>(o: &BTreeMap<String, String>, key: &str, default: T) -> Result<T> {
    match o.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("--{key} {v:?} is not valid")),
    }
}

fn client_main(args: &[String]) -> Result<()> {
    let o = options(args)?;
    let args = ClientArgs {
        addr: o.get("addr").context("--addr")?.parse()?,
        transport: Transport::parse(o.get("transport").context("--transport")?)?,
        count: opt(&o, "count", 1)?,
        local_ip: opt(&o, "local-ip", "127.0.0.1".parse()?)?,
        event_type: opt(&o, "event-type", EVENT_TYPE.to_owned())?,
        event_types: opt(&o, "event-types", 0)?,
        index_offset: opt(&o, "index-offset", 0)?,
        sample_every: opt(&o, "sample-every", 50)?,
        concurrency: opt(&o, "concurrency", 200)?,
    };
    // One thread per client process: the processes, not threads, spread the clients over cores.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(client::run(args))
}

/// `rig-bench responder …`: the Kafka responder of `e2e/bench/proxy.sh` (see [`responder`]).
fn responder_main(args: &[String]) -> Result<()> {
    let args = responder::ResponderArgs::parse(&options(args)?)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(responder::run(args))
}

/// `rig-bench hostile …`: issue 12's measured acceptance (see [`hostile`]); prints the markdown
/// section.
fn hostile_main(args: &[String]) -> Result<()> {
    let o = options(args)?;
    let args = hostile::HostileArgs {
        dataplane: dataplane_bin()?,
        events: opt(&o, "events", 10_000)?,
        resumers: opt(&o, "resumers", 1000)?,
        readers: opt(&o, "readers", 1000)?,
        rate: opt(&o, "rate", 200)?,
        kafka_run: o.get("kafka-run").map(PathBuf::from),
        kafka_sh: o
            .get("kafka-sh")
            .map_or_else(|| PathBuf::from("e2e/env/kafka.sh"), PathBuf::from),
        idle: opt(&o, "idle", 5000)?,
    };
    let section = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(hostile::run(args))?;
    print!("{section}");
    Ok(())
}

/// `rig-bench http-events …`: issue 13's measurements (see [`http_events`]); prints the markdown
/// section.
fn http_events_main(args: &[String]) -> Result<()> {
    let o = options(args)?;
    let brokers = rig_e2e::Env::load()
        .and_then(|env| env.kafka_brokers().map(str::to_owned))
        .context("the test broker (run e2e/env/up.sh or e2e/env/kafka.sh up)")?;
    let args = http_events::HttpEventsArgs {
        dataplane: dataplane_bin()?,
        brokers,
        rate: opt(&o, "rate", 1000)?,
        duration: opt(&o, "duration", 10)?,
        publishers: opt(&o, "publishers", 64)?,
    };
    let section = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(http_events::run(args))?;
    print!("{section}");
    Ok(())
}

/// `rig-bench revocation …`: revocation latency in one process (see [`revocation`]); prints the
/// markdown section.
fn revocation_main(args: &[String]) -> Result<()> {
    let o = options(args)?;
    let args = revocation::RevocationArgs {
        background: o
            .get("background")
            .map_or("1000", String::as_str)
            .split(',')
            .map(|n| n.parse().with_context(|| format!("--background: {n:?}")))
            .collect::<Result<_>>()?,
        revocations: opt(&o, "revocations", 100)?,
        warmup: opt(&o, "warmup", 5)?,
        validity: opt(&o, "validity", 600)?,
        dataplane: dataplane_bin()?,
    };
    let section = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(revocation::run(args))?;
    print!("{section}");
    Ok(())
}

/// The data plane binary: `$RIG_DATAPLANE_BIN`, else `rig-dataplane` next to this executable.
fn dataplane_bin() -> Result<PathBuf> {
    let dataplane = match std::env::var_os("RIG_DATAPLANE_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?
            .parent()
            .context("executable folder")?
            .join("rig-dataplane"),
    };
    if !dataplane.exists() {
        bail!(
            "{} not found: `cargo build --release -p rig-dataplane` (or set RIG_DATAPLANE_BIN)",
            dataplane.display()
        );
    }
    Ok(dataplane)
}

/// What `run` does.
#[derive(Debug, Clone)]
struct RunOptions {
    connections: usize,
    clients: usize,
    duration: Duration,
    publishers: usize,
    window: u64,
    transports: Vec<Transport>,
    latency_rates: Vec<Option<f64>>,
    open_loop: bool,
    kafka: bool,
    subset_types: usize,
    subset_rate: f64,
    dataplane: PathBuf,
}

fn run_main(args: &[String]) -> Result<()> {
    let o = options(args)?;
    let dataplane = dataplane_bin()?;
    let options = RunOptions {
        connections: opt(&o, "connections", 10_000)?,
        clients: opt(&o, "clients", 2usize)?.max(1),
        duration: Duration::from_secs_f64(opt(&o, "duration", 10.0)?),
        publishers: opt(&o, "publishers", 4)?,
        window: opt(&o, "window", 128)?,
        transports: o
            .get("transports")
            .map_or("sse,ws", String::as_str)
            .split(',')
            .map(Transport::parse)
            .collect::<Result<_>>()?,
        latency_rates: o
            .get("latency-rates")
            .map_or("auto,10", String::as_str)
            .split(',')
            .map(|r| match r {
                "auto" => Ok(None),
                r => r
                    .parse()
                    .map(Some)
                    .with_context(|| format!("--latency-rates: {r:?}")),
            })
            .collect::<Result<_>>()?,
        open_loop: opt(&o, "open-loop", true)?,
        kafka: opt(&o, "kafka", true)?,
        subset_types: opt(&o, "subset-types", 100)?,
        subset_rate: opt(&o, "subset-rate", 200.0)?,
        dataplane,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(options))
}

/// Everything measured for one transport.
#[derive(Debug, Default)]
struct Phase {
    transport: Option<Transport>,
    connections: u64,
    before: Memory,
    after: Memory,
    throughput: Vec<Throughput>,
    latency: Vec<(String, Latency)>,
    notes: Vec<String>,
}

async fn run(options: RunOptions) -> Result<()> {
    let brokers = if options.kafka {
        match rig_e2e::Env::load().and_then(|env| env.kafka_brokers().map(str::to_owned)) {
            Ok(brokers) => Some(brokers),
            Err(error) => {
                eprintln!("rig-bench: Kafka scenarios skipped: {error}");
                None
            }
        }
    } else {
        None
    };
    let mut phases = Vec::new();
    for transport in &options.transports {
        eprintln!("rig-bench: === {} ===", transport.name());
        phases.push(phase(&options, *transport, brokers.as_deref()).await?);
    }
    print!("{}", report(&options, &phases));
    Ok(())
}

async fn create_topic(brokers: &str) -> Result<String> {
    let name = rig_e2e::unique_name("rig-bench");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let res = admin
        .create_topics(
            &[NewTopic::new(&name, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;
    for r in res {
        r.map_err(|(topic, code)| anyhow::anyhow!("creating {topic}: {code}"))?;
    }
    Ok(name)
}

async fn phase(options: &RunOptions, transport: Transport, brokers: Option<&str>) -> Result<Phase> {
    let mut result = Phase {
        transport: Some(transport),
        ..Phase::default()
    };
    let topic = match brokers {
        Some(b) => Some(create_topic(b).await?),
        None => None,
    };
    let mut env = vec![];
    if let (Some(b), Some(t)) = (brokers, &topic) {
        env.push(("KAFKA_BROKERS".to_owned(), b.to_owned()));
        env.push(("KAFKA_SOURCE_TOPICS".to_owned(), t.clone()));
    }
    let log = process::log_dir().join(format!("rig-bench-dataplane-{}.log", transport.name()));
    let dp = DataPlane::start(&options.dataplane, &env, topic.is_some(), &log).await?;
    eprintln!(
        "rig-bench: data plane pid {} inbound {} (log {})",
        dp.pid,
        dp.inbound,
        log.display()
    );
    result.before = Memory::settled(dp.pid).await?;

    let template = ClientArgs {
        addr: dp.inbound,
        transport,
        count: 0,
        local_ip: "127.0.0.1".parse()?,
        event_type: EVENT_TYPE.to_owned(),
        event_types: 0,
        index_offset: 0,
        sample_every: (options.connections / 200).max(1),
        concurrency: 200,
    };
    let opening = std::time::Instant::now();
    let mut clients = Clients::start(&template, options.connections, options.clients).await?;
    eprintln!(
        "rig-bench: {} of {} {} connections open in {:.1} s",
        clients.ready,
        options.connections,
        transport.name(),
        opening.elapsed().as_secs_f64()
    );
    let expected = clients.ready as f64;
    deadline_poll(
        "the data plane to count every connection",
        Duration::from_secs(30),
        || async { dp.connections(transport).await.is_ok_and(|n| n >= expected) },
    )
    .await?;
    result.connections = clients.ready;
    result.after = Memory::settled(dp.pid).await?;
    if clients.ready < options.connections as u64 {
        result.notes.push(format!(
            "only {} of {} connections opened (see the client errors above)",
            clients.ready, options.connections
        ));
    }

    let http = Source::Http {
        publishers: options.publishers,
    };
    let kafka = topic.as_ref().zip(brokers).map(|(t, b)| Source::Kafka {
        brokers: b.to_owned(),
        topic: t.clone(),
    });
    eprintln!("rig-bench: throughput, {}", http.name());
    result
        .throughput
        .push(load::throughput(&dp, &mut clients, &http, options.duration, options.window).await?);
    if let Some(kafka) = &kafka {
        eprintln!("rig-bench: throughput, Kafka");
        let t =
            load::throughput(&dp, &mut clients, kafka, options.duration, options.window).await?;
        let max_events = t.rate() / t.open_before.max(1) as f64;
        result.throughput.push(t);
        for rate in &options.latency_rates {
            let (label, rate) = match rate {
                Some(r) => ("fixed".to_owned(), *r),
                None => (
                    format!("½ of max ({max_events:.0} events/s)"),
                    (max_events / 2.0).max(1.0).round(),
                ),
            };
            eprintln!("rig-bench: latency, Kafka at {rate} events/s");
            let l = load::latency(&dp, &mut clients, kafka, options.duration, rate, 0).await?;
            result.latency.push((label, l));
        }
    }
    if options.open_loop {
        eprintln!("rig-bench: open-loop burst, {}", http.name());
        result
            .throughput
            .push(load::throughput(&dp, &mut clients, &http, options.duration, 0).await?);
    }
    clients.quit().await?;
    if let Some(kafka) = kafka.as_ref().filter(|_| options.subset_types > 0) {
        let template = ClientArgs {
            event_types: options.subset_types,
            sample_every: 1,
            ..template
        };
        let mut clients = Clients::start(&template, options.connections, options.clients).await?;
        let expected = clients.ready as f64;
        // The previous connections are gone once the data plane counts exactly the new ones.
        deadline_poll(
            "the data plane to count exactly the new connections",
            Duration::from_secs(30),
            || async { dp.connections(transport).await.is_ok_and(|n| n == expected) },
        )
        .await?;
        let rate = options.subset_rate;
        eprintln!(
            "rig-bench: latency, Kafka at {rate} events/s over {} types",
            options.subset_types
        );
        let l = load::latency(
            &dp,
            &mut clients,
            kafka,
            options.duration,
            rate,
            options.subset_types,
        )
        .await?;
        result.latency.push((
            format!("subset: 1 of {} types per event", options.subset_types),
            l,
        ));
        clients.quit().await?;
    }
    dp.stop().await?;
    Ok(result)
}

fn kib_per_conn(after: u64, before: u64, n: u64) -> f64 {
    (after as f64 - before as f64) / n.max(1) as f64
}

fn verdict(ok: bool) -> &'static str {
    if ok { "meets" } else { "**misses**" }
}

fn report(options: &RunOptions, phases: &[Phase]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### Idle memory per connection (data-plane process)\n");
    let _ = writeln!(
        out,
        "| transport | connections | VmRSS before → after (MiB) | VmRSS/conn (KiB) | Pss/conn (KiB) | Private/conn (KiB) | Anonymous/conn (KiB) | must ≤ {MUST_KIB_PER_CONN} KiB (aim ≤ {AIM_KIB_PER_CONN}) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for p in phases {
        let n = p.connections;
        let rss = kib_per_conn(p.after.rss, p.before.rss, n);
        let _ = writeln!(
            out,
            "| {} | {n} | {:.1} → {:.1} | {rss:.2} | {:.2} | {:.2} | {:.2} | {}{} |",
            p.transport.map_or("?", Transport::name),
            p.before.rss as f64 / 1024.0,
            p.after.rss as f64 / 1024.0,
            kib_per_conn(p.after.pss, p.before.pss, n),
            kib_per_conn(p.after.private, p.before.private, n),
            kib_per_conn(p.after.anon, p.before.anon, n),
            verdict(rss <= MUST_KIB_PER_CONN),
            if rss <= AIM_KIB_PER_CONN {
                ", meets aim"
            } else {
                ""
            },
        );
    }
    let _ = writeln!(
        out,
        "\n### Frames delivered per second (all connections subscribed to `{EVENT_TYPE}`, ~200-byte events)\n"
    );
    let _ = writeln!(
        out,
        "| transport | source | window | conns start → end | events published (failed) | frames received | delivered | seconds | frames/s | min–max per conn | slow-consumer drops | data-plane CPU (cores) | clients CPU (cores) | must ≥ 300k/s |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for p in phases {
        for t in &p.throughput {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} → {} | {} ({}) | {} | {:.1} % | {:.2} | {:.0} | {}–{} | {} | {:.2} | {:.2} | {} |",
                p.transport.map_or("?", Transport::name),
                t.source,
                if t.window == 0 {
                    "open loop".to_owned()
                } else {
                    t.window.to_string()
                },
                t.open_before,
                t.open_after,
                t.published,
                t.publish_failed,
                t.frames,
                t.delivered_share() * 100.0,
                t.seconds,
                t.rate(),
                t.per_conn.0,
                t.per_conn.1,
                t.drops,
                t.dataplane_cores,
                t.client_cores,
                verdict(t.rate() >= MUST_FRAMES_PER_SEC),
            );
        }
    }
    let _ = writeln!(
        out,
        "\n### Kafka → client latency (sampled on 1 connection in {}; on every connection in the subset run)\n",
        (options.connections / 200).max(1)
    );
    let _ = writeln!(
        out,
        "| transport | connections | load | conns per event | events/s | frames/s | events | delivered | samples | p50 (ms) | p99 (ms) | p99.9 (ms) | max (ms) | drops | data-plane CPU (cores) | must p99 < 20 ms |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for p in phases {
        for (label, l) in &p.latency {
            let _ = writeln!(
                out,
                "| {} | {} | {label} | {} | {} | {:.0} | {} | {:.1} % | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {} |",
                p.transport.map_or("?", Transport::name),
                l.open,
                l.fanout,
                l.rate,
                l.rate * l.fanout as f64,
                l.published,
                l.delivered_share * 100.0,
                l.samples.len(),
                l.quantile_ms(0.5),
                l.quantile_ms(0.99),
                l.quantile_ms(0.999),
                l.samples.last().map_or(f64::NAN, |v| *v as f64 / 1e6),
                l.drops,
                l.dataplane_cores,
                verdict(l.quantile_ms(0.99) < MUST_P99_MS),
            );
        }
    }
    for p in phases {
        for n in &p.notes {
            let _ = writeln!(
                out,
                "\nNote ({}): {n}",
                p.transport.map_or("?", Transport::name)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nClients, publishers and the data plane share the machine's cores; client processes: {}; \
         publishers (HTTP): {}; window: {} events; phase duration: {:.0} s.",
        options.clients,
        options.publishers,
        options.window,
        options.duration.as_secs_f64()
    );
    out
}
