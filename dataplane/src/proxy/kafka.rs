//! The Kafka target (a request becomes a CloudEvent on the route's topic) and the reader of the
//! response topics (correlated responses for `response.from: Kafka`).
//!
//! **Producing** (RIG §2.4): the body must be a JSON object with `specversion` (RIG's 400 texts
//! otherwise), unless the route has `wrapPlainJson`: then any JSON body that is not a CloudEvent
//! becomes the `data` of a new CloudEvent 1.0 (`type` = `wrapEventType` or `<METHOD> <path>`,
//! `source` `/rig`, a random UUID `id`, `datacontenttype` `application/json`). RIG's `rig`
//! extension is overwritten (`correlation`, `remoteip`, `host`, `port`, `scheme`, `headers` as
//! `[[name, value], …]`, `method`, `path` (rewritten), `query`); an incoming
//! `rig.target_partition` is kept and is the message key. A top-level `traceparent` (the
//! request's when valid, else a new one) is set and also sent as a Kafka header, next to
//! `content-type: application/cloudevents+json` (structured mode). One `FutureProducer` per
//! process; the request is answered only once the broker acknowledged the message, so a broker
//! failure or a delivery beyond the route timeout answers 503, never 202.
//!
//! **Responses**: every process assigns itself all partitions of the response topics
//! (`PROXY_KAFKA_RESPONSE_TOPICS`; no group membership, no commits; new partitions found every
//! 5 s), from the end offset at assignment. A message is matched by its `rig-correlation` header
//! alone; other processes' responses are dropped without looking at the body.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::Proxy;
use super::correlation::{self, Delivery, Reply};
use crate::kafka::every_partition::EveryPartition;
use crate::support::supervise::TaskHealth;

/// How often response-topic metadata is re-read (topics created later, added partitions).
const METADATA_REFRESH: Duration = Duration::from_secs(5);
/// librdkafka's bound on one delivery (retries included); the request's own wait is the route
/// timeout.
const MESSAGE_TIMEOUT_MS: &str = "30000";

/// RIG's 400 for a body that is not JSON.
pub const NOT_JSON: &str = "Bad request: expected a JSON encoded request body.";
/// RIG's 400 for JSON that is not a CloudEvent.
pub const NOT_CLOUDEVENT: &str = "Bad request: the body does not look like a CloudEvent.";

/// Why a request body cannot be produced.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON.
    #[error("{NOT_JSON}")]
    NotJson,
    /// JSON, but not a CloudEvent (and the route does not wrap).
    #[error("{NOT_CLOUDEVENT}")]
    NotCloudEvent,
}

/// Why producing failed.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// No `KAFKA_BROKERS`.
    #[error("Kafka is not configured (KAFKA_BROKERS is empty): this route cannot be served.")]
    NotConfigured,
    /// The broker refused or did not acknowledge.
    #[error("The message could not be delivered to Kafka: {0}")]
    Failed(String),
    /// No acknowledgement within the route timeout. The producer keeps trying for its own
    /// bound (`message.timeout.ms`, 30 s), so the message may still be delivered: the answer says
    /// so, and a client retrying should reuse the event's `id` so consumers can deduplicate.
    #[error(
        "Kafka did not acknowledge the message in time; it may still be delivered within 30 s (a retry should reuse the event's id, so consumers can deduplicate)."
    )]
    Timeout,
}

/// The request facts that go into RIG's `rig` extension.
#[derive(Debug)]
pub struct RequestInfo<'a> {
    /// The correlation id.
    pub correlation: &'a str,
    /// The client.
    pub peer: SocketAddr,
    /// The request method.
    pub method: &'a Method,
    /// The (rewritten) path.
    pub path: &'a str,
    /// The raw query.
    pub query: &'a str,
    /// The request headers (after the route's added headers).
    pub headers: &'a HeaderMap,
    /// `http`, or `https` on the TLS port.
    pub scheme: &'a str,
    /// The request URI's authority (HTTP/2's `:authority`), for a request without `host`.
    pub authority: Option<&'a str>,
    /// The inbound port (when `host` names none).
    pub port: u16,
    /// The route's wrap settings: `Some(type)` when plain JSON is wrapped.
    pub wrap: Option<&'a str>,
}

/// A CloudEvent ready to produce.
#[derive(Debug)]
pub struct Outgoing {
    /// The JSON text.
    pub payload: Vec<u8>,
    /// `rig.target_partition`, the message key.
    pub key: Option<String>,
    /// The top-level `traceparent`.
    pub traceparent: String,
}

/// Build the CloudEvent for `body` (RIG §2.4, plus wrapping).
pub fn build_event(body: &[u8], info: &RequestInfo<'_>) -> Result<Outgoing, BodyError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| BodyError::NotJson)?;
    let mut event = match value {
        Value::Object(map) if map.contains_key("specversion") => map,
        other => match info.wrap {
            None => return Err(BodyError::NotCloudEvent),
            Some(event_type) => {
                let event_type = if event_type.is_empty() {
                    format!("{} {}", info.method, info.path)
                } else {
                    event_type.to_owned()
                };
                let Value::Object(map) = json!({
                    "specversion": "1.0",
                    "type": event_type,
                    "source": "/rig",
                    "id": crate::support::uuid_v4(),
                    "datacontenttype": "application/json",
                    "data": other,
                }) else {
                    return Err(BodyError::NotCloudEvent);
                };
                map
            }
        },
    };
    let target_partition = event
        .get("rig")
        .and_then(|r| r.get("target_partition"))
        .cloned();
    let key = match &target_partition {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    // HTTP/2 has no `host` header: its `:authority` stands in (as RIG's server reports it).
    let host_header = info
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(info.authority)
        .unwrap_or("");
    let (host, port) = match host_header.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
            Ok(p) => (h.to_owned(), p),
            Err(_) => (host_header.to_owned(), info.port),
        },
        _ => (host_header.to_owned(), info.port),
    };
    let mut headers: Vec<Value> = info
        .headers
        .iter()
        .map(|(k, v)| json!([k.as_str(), String::from_utf8_lossy(v.as_bytes())]))
        .collect();
    if !info.headers.contains_key(http::header::HOST)
        && let Some(authority) = info.authority
    {
        headers.push(json!(["host", authority]));
    }
    let mut rig = json!({
        "correlation": info.correlation,
        "remoteip": remote_ip(info.peer),
        "host": host,
        "port": port,
        "scheme": info.scheme,
        "headers": headers,
        "method": info.method.as_str(),
        "path": info.path,
        "query": info.query,
    });
    if let Some(tp) = target_partition {
        rig["target_partition"] = tp;
    }
    event.insert("rig".into(), rig);
    let mut trace = HeaderMap::new();
    if let Some(tp) = info.headers.get("traceparent") {
        trace.insert("traceparent", tp.clone());
    }
    super::http::ensure_traceparent(&mut trace);
    let traceparent = trace
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !traceparent.is_empty() {
        event.insert("traceparent".into(), traceparent.clone().into());
    }
    let payload = serde_json::to_vec(&Value::Object(event)).map_err(|_| BodyError::NotJson)?;
    Ok(Outgoing {
        payload,
        key,
        traceparent,
    })
}

pub(crate) fn remote_ip(peer: SocketAddr) -> String {
    match peer.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        ip => ip.to_string(),
    }
}

/// Produced-event counters per (target, topic): `rig_produced_events_total` and
/// `rig_produced_events_failed_total`.
#[derive(Debug, Default)]
pub struct Produced {
    by_topic: Mutex<BTreeMap<String, Arc<[AtomicU64; 2]>>>,
}

impl Produced {
    fn counters(&self, topic: &str) -> Arc<[AtomicU64; 2]> {
        let mut map = self
            .by_topic
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = map.get(topic) {
            return c.clone();
        }
        let c = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        map.insert(topic.to_owned(), c.clone());
        c
    }

    /// Count one outcome.
    pub fn count(&self, topic: &str, ok: bool) {
        self.counters(topic)[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// Append both counters to a `/metrics` text.
    pub fn render(&self, out: &mut String) {
        let map = self
            .by_topic
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (i, (name, help)) in [
            (
                "rig_produced_events_total",
                "Events produced by the proxy (acknowledged by the broker).",
            ),
            (
                "rig_produced_events_failed_total",
                "Events the proxy could not produce.",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            crate::support::prom::family(out, name, crate::support::prom::Kind::Counter, help);
            for (topic, c) in map.iter() {
                crate::support::prom::sample(
                    out,
                    name,
                    &[("target", "kafka"), ("topic", topic)],
                    c[i].load(Ordering::Relaxed),
                );
            }
        }
    }
}

/// The process's producer (`FutureProducer` has no `Debug`), with the partition counts RIG's
/// partition rule needs.
pub struct Producer {
    /// The producer.
    pub producer: FutureProducer,
    /// Partition counts of the topics produced to.
    pub partitions: crate::kafka::partition::PartitionCounts,
}

impl Producer {
    /// A producer with nothing cached yet.
    pub fn new(producer: FutureProducer) -> Self {
        Self {
            producer,
            partitions: crate::kafka::partition::PartitionCounts::default(),
        }
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Producer")
    }
}

/// The process's producer (one, created at start when `KAFKA_BROKERS` is set). A request waits
/// for its message's acknowledgement, so latency settings: batches close after 1 ms, and Nagle's
/// algorithm is off on the broker connections (librdkafka leaves it on), so a small produce
/// request is not held back behind an unacknowledged one. Idempotent: a retried batch is neither
/// duplicated nor reordered, so messages with one partition key stay in the order the gateway
/// acknowledged them.
pub fn producer(brokers: &str) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("socket.nagle.disable", "true")
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS)
        .create()
}

/// Produce `event` to `topic` and wait (at most `timeout`) for the broker's acknowledgement.
pub async fn produce(
    producer: Option<&Producer>,
    produced: &Produced,
    topic: &str,
    event: &Outgoing,
    timeout: Duration,
) -> Result<(), ProduceError> {
    let Some(producer) = producer else {
        produced.count(topic, false);
        return Err(ProduceError::NotConfigured);
    };
    let mut headers = OwnedHeaders::new().insert(Header {
        key: "content-type",
        value: Some("application/cloudevents+json"),
    });
    if !event.traceparent.is_empty() {
        headers = headers.insert(Header {
            key: "traceparent",
            value: Some(event.traceparent.as_str()),
        });
    }
    let started = tokio::time::Instant::now();
    let mut record = FutureRecord::<str, [u8]>::to(topic)
        .payload(&event.payload)
        .headers(headers);
    if let Some(key) = &event.key {
        // RIG's partition for the key (murmur3), not librdkafka's CRC32 rule.
        let Some(count) = producer
            .partitions
            .get(&producer.producer, topic, timeout)
            .await
        else {
            produced.count(topic, false);
            return Err(ProduceError::Failed(
                "the topic's partitions are unknown (broker unreachable or no such topic)"
                    .to_owned(),
            ));
        };
        record = record
            .key(key.as_str())
            .partition(crate::kafka::partition::rig_partition(
                key.as_bytes(),
                count,
            ));
    }
    let left = timeout.saturating_sub(started.elapsed());
    let result = tokio::time::timeout(left, producer.producer.send(record, Duration::ZERO)).await;
    let result = match result {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(ProduceError::Failed(error.to_string())),
        Err(_) => Err(ProduceError::Timeout),
    };
    produced.count(topic, result.is_ok());
    if let Err(error) = &result {
        tracing::warn!(%topic, %error, "proxy request not produced");
    }
    result
}

/// Read every partition of the response `topics` (correlated responses for this process are
/// picked by their header, the rest dropped) until `shutdown`. `health` follows the broker; the
/// caller supervises this task.
pub async fn run_responses(
    proxy: Arc<Proxy>,
    brokers: String,
    topics: Vec<String>,
    mut shutdown: watch::Receiver<bool>,
    health: Arc<TaskHealth>,
) -> Result<(), rdkafka::error::KafkaError> {
    // A waiting fetch is answered as soon as a response arrives; this only bounds an empty one.
    // Nagle off, as for the producer: responses are small and someone waits for each.
    let mut reader = EveryPartition::new(
        &brokers,
        &format!("rig-proxy-response-{}", proxy.settings.owner),
        &[
            ("fetch.wait.max.ms", "10"),
            ("socket.nagle.disable", "true"),
        ],
        health,
    )?;
    tracing::info!(%brokers, ?topics, "reading proxy responses (every partition)");
    proxy.response_partitions.store(0, Ordering::Relaxed);
    let mut refresh = tokio::time::interval(METADATA_REFRESH);
    loop {
        tokio::select! {
            _ = refresh.tick() => {
                for a in reader.assign_new(&topics).await {
                    tracing::info!(topic = %a.topic, partition = a.partition, "response partition assigned");
                    proxy.response_partitions.fetch_add(1, Ordering::Relaxed);
                }
            }
            message = reader.consumer().recv() => match message {
                Ok(message) => handle(&proxy, &message),
                Err(error) => tracing::warn!(%error, "kafka response consumer error (librdkafka retries by itself)"),
            },
            _ = crate::support::stopped(&mut shutdown) => break,
        }
    }
    Ok(())
}

fn handle(proxy: &Proxy, message: &rdkafka::message::BorrowedMessage<'_>) {
    let correlations = &proxy.correlations;
    let headers = message.headers();
    let header = |name: &str| {
        headers.and_then(|h| {
            h.iter()
                .find(|x| x.key.eq_ignore_ascii_case(name))
                .and_then(|x| x.value)
        })
    };
    let Some(id) = header(correlation::HEADER_CORRELATION) else {
        correlations.count_invalid();
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            "dropping a response without rig-correlation"
        );
        return;
    };
    // Cheap owner check first: other processes' responses are dropped by the header alone.
    if !correlation::Correlations::is_own(&proxy.settings.owner, id) {
        correlations.count_foreign();
        return;
    }
    let status = match correlation::parse_code(header(correlation::HEADER_RESPONSE_CODE)) {
        Ok(s) => s,
        Err(error) => {
            correlations.count_invalid();
            tracing::warn!(topic = message.topic(), offset = message.offset(), %error, "dropping a response with a bad rig-response-code");
            return;
        }
    };
    let reply = Reply {
        status,
        headers: correlation::reply_headers(
            headers
                .iter()
                .flat_map(|h| h.iter())
                .filter_map(|h| h.value.map(|v| (h.key, v))),
        ),
        body: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
    };
    if correlations.deliver(&proxy.settings.owner, id, reply) == Delivery::Late {
        tracing::info!(correlation = %String::from_utf8_lossy(id), "dropping a late response (nothing waits for it)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info<'a>(headers: &'a HeaderMap, wrap: Option<&'a str>) -> RequestInfo<'a> {
        RequestInfo {
            correlation: "pod.1.2",
            peer: "127.0.0.1:5000".parse().expect("addr"),
            method: &Method::POST,
            path: "/orders",
            query: "a=1",
            headers,
            scheme: "http",
            authority: None,
            port: 4000,
            wrap,
        }
    }

    #[test]
    fn cloudevents_get_the_rig_extension_and_plain_json_is_wrapped_only_when_allowed() {
        let mut h = HeaderMap::new();
        h.insert("host", "gw.example:8080".parse().expect("value"));
        let body = br#"{"specversion":"1.0","type":"t","id":"1","source":"s","rig":{"target_partition":"k1","x":1}}"#;
        let out = build_event(body, &info(&h, None)).expect("event");
        let v: Value = serde_json::from_slice(&out.payload).expect("json");
        assert_eq!(out.key.as_deref(), Some("k1"));
        assert_eq!(v["rig"]["correlation"], "pod.1.2");
        assert_eq!(v["rig"]["host"], "gw.example");
        assert_eq!(v["rig"]["port"], 8080);
        assert_eq!(v["rig"]["remoteip"], "127.0.0.1");
        assert_eq!(v["rig"]["headers"][0], json!(["host", "gw.example:8080"]));
        assert_eq!(v["rig"]["query"], "a=1");
        assert!(v["rig"].get("x").is_none());
        assert_eq!(v["traceparent"], out.traceparent.as_str());
        assert_eq!(
            build_event(b"{\"a\":1}", &info(&h, None)).err(),
            Some(BodyError::NotCloudEvent)
        );
        assert_eq!(
            build_event(b"nope", &info(&h, Some(""))).err(),
            Some(BodyError::NotJson)
        );
        let out = build_event(b"{\"a\":1}", &info(&h, Some(""))).expect("wrapped");
        let v: Value = serde_json::from_slice(&out.payload).expect("json");
        assert_eq!(v["type"], "POST /orders");
        assert_eq!(v["data"], json!({"a": 1}));
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"].as_str().map(str::len), Some(36));
    }

    #[test]
    fn an_http2_request_without_host_takes_its_authority() {
        let h = HeaderMap::new();
        let mut request = info(&h, None);
        request.authority = Some("gw.example:8443");
        let body = br#"{"specversion":"1.0","type":"t","id":"1","source":"s"}"#;
        let v: Value = serde_json::from_slice(&build_event(body, &request).expect("event").payload)
            .expect("json");
        assert_eq!(
            (v["rig"]["host"].as_str(), v["rig"]["port"].as_u64()),
            (Some("gw.example"), Some(8443))
        );
        assert_eq!(v["rig"]["headers"], json!([["host", "gw.example:8443"]]));
    }
}
