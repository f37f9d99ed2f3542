//! RIG's `REQUEST_LOG`: each proxied API call (matched, past its JWT check, about to be forwarded)
//! is logged to the console (`CALL: [<endpoint id>] <METHOD> <path_regex> => <target>`) and/or
//! produced to `KAFKA_LOG_TOPIC` as a CloudEvents 0.2 `com.rig.proxy.api.call` event with
//! `data.endpoint`, `data.request_path` and `data.remote_ip`, keyed `partition` as RIG keys it.
//!
//! The Kafka log never holds the request back (RIG's was fire-and-forget too): the event is handed
//! to a task that waits for the broker's acknowledgement. At most [`MAX_IN_FLIGHT`] wait at once;
//! beyond, and for every failed produce, the event is dropped, counted
//! (`rig_request_log_events_total{result}`) and logged.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::Proxy;
use super::kafka::{Outgoing, Produced};
use super::routes::{ApiShared, Endpoint, Target};

/// Log events waiting for the broker at once; beyond, they are dropped (and counted).
pub const MAX_IN_FLIGHT: usize = 10_000;

/// How long the broker has to acknowledge a log event.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// RIG's message key for every log event.
const KEY: &str = "partition";

/// The request log of the proxy.
#[derive(Debug, Default)]
pub struct RequestLog {
    console: bool,
    /// `KAFKA_LOG_TOPIC` when `kafka` is on.
    topic: Option<String>,
    in_flight: Arc<AtomicUsize>,
    /// Produced, failed, dropped (too many in flight or no producer).
    counts: Arc<[AtomicU64; 3]>,
}

impl RequestLog {
    /// From `REQUEST_LOG` / `KAFKA_LOG_TOPIC`.
    pub fn new(config: &crate::config::RequestLog) -> Self {
        Self {
            console: config.console,
            topic: config.kafka.then(|| config.topic.clone()),
            ..Self::default()
        }
    }

    /// Whether anything is logged (the direct proxy path stands aside then).
    pub fn enabled(&self) -> bool {
        self.console || self.topic.is_some()
    }

    /// Log one call to `endpoint` of `api` (the proxy's producer sends the Kafka log).
    pub fn call(
        proxy: &Arc<Proxy>,
        api: &ApiShared,
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
        api: &ApiShared,
        endpoint: &Endpoint,
        request_path: &str,
        peer: SocketAddr,
        traceparent: Option<&str>,
    ) {
        if self.console {
            let line = format!(
                "CALL: [{}] {} {} => {}\n",
                endpoint.id,
                endpoint.method,
                endpoint.path_regex,
                target_url(endpoint.target(api))
            );
            // Standard output, as RIG's `IO.puts`; a closed stdout must not fail the request.
            let _ = std::io::stdout().lock().write_all(line.as_bytes());
        }
        let Some(topic) = &self.topic else {
            return;
        };
        if proxy.producer.get().is_none() {
            self.counts[2].fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
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
            payload: event(api, endpoint, request_path, peer, traceparent).into_bytes(),
            key: Some(KEY.to_owned()),
            traceparent: traceparent.unwrap_or_default().to_owned(),
        };
        let (topic, in_flight, counts, proxy) = (
            topic.clone(),
            self.in_flight.clone(),
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
            "REQUEST_LOG=kafka events: produced, failed (no acknowledgement), dropped (too many waiting, or no producer).",
        );
        for (result, i) in [("produced", 0), ("failed", 1), ("dropped", 2)] {
            prom::sample(
                out,
                name,
                &[("result", result)],
                self.counts[i].load(Ordering::Relaxed),
            );
        }
    }
}

/// The target as RIG's console line shows it.
fn target_url(target: &Target) -> String {
    match target {
        Target::Http(t) => format!("{}://{}", t.scheme, t.authority),
        Target::Kafka { topic, .. } => format!("kafka:{topic}"),
        other => other.label().to_owned(),
    }
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
