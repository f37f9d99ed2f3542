//! Events published over HTTP (`POST /_rig/v1/events`, `POST /v3/messages`) when Kafka is on: each
//! is produced to a topic every data-plane process consumes, and reaches clients only through that
//! consumer — one path for all events, so every pod delivers it, in one order, with resume tokens
//! that cover it after a restart and on any pod (RIG delivered HTTP events cluster-wide too).
//!
//! The topic is the one the type's `EventRoute` names (`source.http.topic`, else its first Kafka
//! topic), else `RIG_HTTP_EVENTS_TOPIC` (default: the first `KAFKA_SOURCE_TOPICS` topic). The
//! message is the event's structured-mode JSON as the client sent it; its key, which picks the
//! partition and so the order, is the CloudEvents `partitionkey` extension, else RIG's
//! `rig.target_partition`, else none (events without a key have no order among each other).
//!
//! A keyed event goes to RIG's partition for its key ([`super::partition`]: murmur3), so it
//! shares a partition, and so an order, with what RIG produced for that key.
//!
//! The client gets 202 only once the broker acknowledged (all in-sync replicas, idempotent
//! producer). A broker that is down or does not acknowledge within `RIG_PUBLISH_TIMEOUT_MS` gets
//! 503 at that deadline; the producer's own `message.timeout.ms` is the same, so a message that
//! never reached the broker is dropped, not sent later. A message the broker received but did not
//! acknowledge in time (a hung broker) may still be delivered after a 503: a client that retries
//! with the same event `id` lets consumers deduplicate.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use super::partition::{PartitionCounts, rig_partition};
use crate::events::CloudEvent;
use crate::metrics::Metrics;

/// Why an event was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Neither the type's `EventRoute` nor the process names a topic.
    #[error(
        "no Kafka topic for HTTP-published events of type {0:?}: set source.http.topic on its EventRoute or RIG_HTTP_EVENTS_TOPIC"
    )]
    NoTopic(String),
    /// The broker did not acknowledge it.
    #[error(
        "Kafka did not acknowledge the event ({0}); it was not published (a broker that received it without acknowledging may still deliver it: retry with the same event id)"
    )]
    Failed(String),
}

/// The producer of HTTP-published events (module docs).
pub struct Publisher {
    producer: FutureProducer,
    default_topic: Option<String>,
    timeout: Duration,
    partitions: PartitionCounts,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("default_topic", &self.default_topic)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A producer for `brokers`; an event must be acknowledged within `timeout`.
    pub fn new(
        brokers: &str,
        default_topic: Option<String>,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let timeout_ms = timeout.as_millis().clamp(10, i32::MAX as u128).to_string();
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("socket.nagle.disable", "true")
            .set("message.timeout.ms", &timeout_ms)
            .create()?;
        Ok(Self {
            producer,
            default_topic,
            timeout,
            partitions: PartitionCounts::default(),
            metrics,
        })
    }

    /// Produce `event` to `route_topic` (its `EventRoute`'s), else the default topic, and wait
    /// for the acknowledgement.
    pub async fn publish(
        &self,
        route_topic: Option<&str>,
        event: &CloudEvent,
    ) -> Result<(), PublishError> {
        let Some(topic) = route_topic.or(self.default_topic.as_deref()) else {
            self.metrics
                .http_events_failed
                .fetch_add(1, Ordering::Relaxed);
            return Err(PublishError::NoTopic(event.event_type.clone()));
        };
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/cloudevents+json"),
        });
        let started = tokio::time::Instant::now();
        let key = partition_key(&event.value);
        let mut record = FutureRecord::<str, [u8]>::to(topic)
            .payload(&event.json[..])
            .headers(headers);
        if let Some(key) = &key {
            record = record.key(key.as_str());
            let Some(count) = self
                .partitions
                .get(&self.producer, topic, self.timeout)
                .await
            else {
                return Err(self.failed(
                    topic,
                    event,
                    "the topic's partitions are unknown (broker unreachable or no such topic)"
                        .to_owned(),
                ));
            };
            record = record.partition(rig_partition(key.as_bytes(), count));
        }
        let left = self.timeout.saturating_sub(started.elapsed());
        // The answer comes by the deadline whatever librdkafka does meanwhile (a broker that is
        // down for a while delays its delivery reports beyond `message.timeout.ms`).
        match tokio::time::timeout(left, self.producer.send(record, Duration::ZERO)).await {
            Ok(Ok(_)) => {
                self.metrics
                    .http_events_produced
                    .fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err((error, _))) => Err(self.failed(topic, event, error.to_string())),
            Err(_) => Err(self.failed(topic, event, format!("no acknowledgement within {left:?}"))),
        }
    }

    fn failed(&self, topic: &str, event: &CloudEvent, error: String) -> PublishError {
        self.metrics
            .http_events_failed
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%topic, event_type = %event.event_type, %error, "HTTP-published event not produced");
        PublishError::Failed(error)
    }
}

/// The message key of an event: the CloudEvents `partitionkey` extension, else RIG's
/// `rig.target_partition` (as the proxy's Kafka target), else none.
pub fn partition_key(event: &Value) -> Option<String> {
    let value = event
        .get("partitionkey")
        .or_else(|| event.get("rig").and_then(|r| r.get("target_partition")))?;
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_partitionkey_then_rigs_target_partition() {
        let key = |v: Value| partition_key(&v);
        assert_eq!(
            key(serde_json::json!({"partitionkey": "a", "rig": {"target_partition": "b"}})),
            Some("a".to_owned())
        );
        assert_eq!(
            key(serde_json::json!({"rig": {"target_partition": 7}})),
            Some("7".to_owned())
        );
        assert_eq!(key(serde_json::json!({"partitionkey": null})), None);
        assert_eq!(key(serde_json::json!({"type": "t"})), None);
    }
}
