//! RIG's `REQUEST_LOG`: each proxied API call (matched, past its JWT check, about to be forwarded)
//! is logged to the console (`CALL: [<endpoint id>] <METHOD> <path_regex> => <target>`) and/or
//! produced to `KAFKA_LOG_TOPIC` as a CloudEvents 0.2 `com.rig.proxy.api.call` event with
//! `data.endpoint`, `data.request_path` and `data.remote_ip`, keyed `partition` as RIG keys it.
//!
//! Neither log ever holds the request back (RIG's Kafka log was fire-and-forget too): a console
//! line goes to a writer thread through a bounded queue ([`CONSOLE_QUEUE`] lines; a standard
//! output nobody reads fills it, then lines are dropped), a Kafka event to a task that waits for
//! the broker's acknowledgement (at most [`MAX_IN_FLIGHT`] events and [`MAX_IN_FLIGHT_BYTES`]
//! bytes at once). Whatever is dropped, or not acknowledged, is counted
//! (`rig_request_log_events_total{result}`) and logged.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::Proxy;
use super::kafka::{Outgoing, Produced};
use super::routes::{Api, ApiShared, Endpoint, Origin, Target};

/// Log events waiting for the broker at once; beyond, they are dropped (and counted).
pub const MAX_IN_FLIGHT: usize = 10_000;

/// Bytes of log events waiting for the broker at once (long request paths make big events).
pub const MAX_IN_FLIGHT_BYTES: usize = 16 << 20;

/// Console lines waiting for standard output.
pub const CONSOLE_QUEUE: usize = 10_000;

/// How long the broker has to acknowledge a log event.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// RIG's message key for every log event.
const KEY: &str = "partition";

/// The request log of the proxy.
#[derive(Debug, Default)]
pub struct RequestLog {
    /// The console writer's queue, when `console` is on.
    console: Option<std::sync::mpsc::SyncSender<String>>,
    /// `KAFKA_LOG_TOPIC` when `kafka` is on.
    topic: Option<String>,
    in_flight: Arc<AtomicUsize>,
    in_flight_bytes: Arc<AtomicUsize>,
    /// Kafka: produced, failed, dropped (too many in flight or no producer); console: dropped.
    counts: Arc<[AtomicU64; 4]>,
}

impl RequestLog {
    /// From `REQUEST_LOG` / `KAFKA_LOG_TOPIC`.
    pub fn new(config: &crate::config::RequestLog) -> Self {
        Self {
            console: config.console.then(console_writer),
            topic: config.kafka.then(|| config.topic.clone()),
            ..Self::default()
        }
    }

    /// Whether anything is logged (the direct proxy path stands aside then).
    pub fn enabled(&self) -> bool {
        self.console.is_some() || self.topic.is_some()
    }

    /// Log one call to `endpoint` of `api` (the proxy's producer sends the Kafka log).
    pub fn call(
        proxy: &Arc<Proxy>,
        api: &Api,
        endpoint: &Endpoint,
        request_path: &str,
        peer: SocketAddr,
        traceparent: Option<&str>,
    ) {
        let log = &proxy.request_log;
        if !log.enabled() {
            return;
        }
        log.log(proxy, api, endpoint, request_path, peer, traceparent);
    }

    fn log(
        &self,
        proxy: &Arc<Proxy>,
        api: &Api,
        endpoint: &Endpoint,
        request_path: &str,
        peer: SocketAddr,
        traceparent: Option<&str>,
    ) {
        if let Some(console) = &self.console {
            let line = format!(
                "CALL: [{}] {} {} => {}\n",
                endpoint.id,
                endpoint.method,
                endpoint.path_regex,
                target_url(api, endpoint)
            );
            if console.try_send(line).is_err()
                && self.counts[3]
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(1000)
            {
                tracing::warn!("request log line dropped: standard output does not keep up");
            }
        }
        let Some(topic) = &self.topic else {
            return;
        };
        if proxy.producer.get().is_none() {
            self.counts[2].fetch_add(1, Ordering::Relaxed);
            return;
        }
        let payload = event(&api.shared, endpoint, request_path, peer, traceparent).into_bytes();
        let size = payload.len();
        let bytes_before = self.in_flight_bytes.fetch_add(size, Ordering::AcqRel);
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT
            || bytes_before + size > MAX_IN_FLIGHT_BYTES
        {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.in_flight_bytes.fetch_sub(size, Ordering::AcqRel);
            if self.counts[2]
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(1000)
            {
                tracing::warn!(
                    max = MAX_IN_FLIGHT,
                    "request log event dropped: too many wait for the broker"
                );
            }
            return;
        }
        let event = Outgoing {
            payload,
            key: Some(KEY.to_owned()),
            traceparent: traceparent.unwrap_or_default().to_owned(),
        };
        let (topic, in_flight, in_flight_bytes, counts, proxy) = (
            topic.clone(),
            self.in_flight.clone(),
            self.in_flight_bytes.clone(),
            self.counts.clone(),
            proxy.clone(),
        );
        tokio::spawn(async move {
            // Its own counters: the proxy's `rig_produced_events_total` counts proxied requests.
            let produced = Produced::default();
            let producer = proxy.producer.get();
            let result =
                super::kafka::produce(producer, &produced, &topic, &event, ACK_TIMEOUT).await;
            in_flight.fetch_sub(1, Ordering::AcqRel);
            in_flight_bytes.fetch_sub(size, Ordering::AcqRel);
            if let Err(error) = &result
                && counts[1].load(Ordering::Relaxed).is_multiple_of(100)
            {
                tracing::warn!(%topic, %error, "request log event not produced");
            }
            counts[usize::from(result.is_err())].fetch_add(1, Ordering::Relaxed);
        });
    }

    /// Append `rig_request_log_events_total` to a `/metrics` text.
    pub fn render(&self, out: &mut String) {
        use crate::support::prom;
        let name = "rig_request_log_events_total";
        prom::family(
            out,
            name,
            prom::Kind::Counter,
            "REQUEST_LOG events: produced to Kafka, failed (no acknowledgement), dropped (too many waiting, or no producer), console_dropped (standard output does not keep up).",
        );
        for (result, i) in [
            ("produced", 0),
            ("failed", 1),
            ("dropped", 2),
            ("console_dropped", 3),
        ] {
            prom::sample(
                out,
                name,
                &[("result", result)],
                self.counts[i].load(Ordering::Relaxed),
            );
        }
    }
}

/// The target as RIG's console line shows it: a RIG definition's `proxy.target_url` as written;
/// for a `ProxyRoute`, its URL (or `kafka:<topic>`).
fn target_url(api: &Api, endpoint: &Endpoint) -> String {
    if api.origin == Origin::Rig
        && let Some(url) = api.definition["proxy"]["target_url"].as_str()
    {
        return url.to_owned();
    }
    match endpoint.target(&api.shared) {
        Target::Http(t) => format!("{}://{}", t.scheme, t.authority),
        Target::Kafka { topic, .. } => format!("kafka:{topic}"),
        other => other.label().to_owned(),
    }
}

/// The console writer: a thread that owns standard output, fed through a bounded queue.
fn console_writer() -> std::sync::mpsc::SyncSender<String> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<String>(CONSOLE_QUEUE);
    let spawned = std::thread::Builder::new()
        .name("request-log".into())
        .spawn(move || {
            let mut out = std::io::stdout();
            while let Ok(line) = rx.recv() {
                // A closed standard output loses the line, never the request.
                let _ = out.write_all(line.as_bytes());
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the request log writer: console lines are dropped");
    }
    tx
}

/// The `com.rig.proxy.api.call` event (CloudEvents 0.2, as RIG produces it).
fn event(
    api: &ApiShared,
    endpoint: &Endpoint,
    request_path: &str,
    peer: SocketAddr,
    traceparent: Option<&str>,
) -> String {
    let time = crate::events::rig_time(std::time::SystemTime::now());
    let mut description = json!({
        "id": endpoint.id,
        "method": endpoint.method.as_str(),
        "path_regex": endpoint.path_regex,
        "secured": endpoint.secured,
        "transform_request_headers": endpoint.add_headers,
        "target": endpoint.target(api).label(),
        "response_from": endpoint.response_from(api).label(),
    });
    if let Some(replacement) = &endpoint.replacement {
        description["path_replacement"] = replacement.clone().into();
    }
    if let Target::Kafka { topic, .. } = endpoint.target(api) {
        description["topic"] = topic.clone().into();
    }
    let mut event = json!({
        "id": crate::support::uuid_v4(),
        "time": time,
        "source": "/rig",
        "type": "com.rig.proxy.api.call",
        "contenttype": "application/json",
        "specversion": "0.2",
        "data": {
            "endpoint": description,
            "request_path": request_path,
            "remote_ip": super::kafka::remote_ip(peer),
        },
    });
    if let Some(tp) = traceparent {
        event["traceparent"] = Value::from(tp);
    }
    event.to_string()
}
