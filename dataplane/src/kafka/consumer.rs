//! The event consumer: every data-plane process reads **every** partition of its event topics.
//!
//! RIG let all nodes share one consumer group, so with three replicas each client got a third of
//! its events (RIG issue #332). Here each process assigns itself all partitions manually (no group
//! membership, no rebalancing, no commits), starting at the latest offset. Partitions are
//! discovered from metadata and re-checked periodically, so topics created after start and added
//! partitions are picked up. librdkafka reconnects to the brokers by itself after an outage.
//!
//! Messages that are not CloudEvents are skipped: a warning and `rig_consumed_events_failed_total`,
//! never a stuck partition or a crash.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use tokio::sync::watch;

use crate::events;
use crate::state::State;

/// How often partition metadata is re-read (new topics, added partitions).
const METADATA_REFRESH: Duration = Duration::from_secs(5);

/// Errors that stop the consumer from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be created (bad configuration).
    #[error("cannot create the Kafka consumer")]
    Create(#[source] rdkafka::error::KafkaError),
}

/// Consume the topics named by `topics` (which may change at run time) from `brokers` and publish
/// every event to the hub, until `shutdown`.
pub async fn run(
    state: Arc<State>,
    brokers: String,
    mut topics: watch::Receiver<Vec<String>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        // Required by librdkafka even for manual assignment; never joined nor committed.
        .set("group.id", format!("rig-dataplane-{}", state.owner))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "latest")
        .set("fetch.wait.max.ms", "10")
        .set("topic.metadata.refresh.interval.ms", "5000")
        .create()
        .map_err(Error::Create)?;
    tracing::info!(%brokers, topics = ?*topics.borrow(), "consuming events (every partition, from the latest offset)");
    let consumer = Arc::new(consumer);
    let mut assigned: BTreeSet<(String, i32)> = BTreeSet::new();
    let mut streams = Streams::default();
    let mut refresh = tokio::time::interval(METADATA_REFRESH);
    loop {
        tokio::select! {
            _ = refresh.tick() => {
                let current = topics.borrow().clone();
                assign_new_partitions(&state, &consumer, &current, &mut assigned, &mut streams).await;
                report_lag(&state, &consumer).await;
            }
            changed = topics.changed() => {
                if changed.is_err() {
                    continue;
                }
                let current = topics.borrow_and_update().clone();
                unassign_removed(&state, &consumer, &current, &mut assigned);
                // Only the topics this change added: one metadata round trip for a new route,
                // not one per topic already consumed (new partitions of those are found by the
                // periodic refresh).
                let added: Vec<String> = current
                    .iter()
                    .filter(|t| !assigned.iter().any(|(a, _)| a == *t))
                    .cloned()
                    .collect();
                assign_new_partitions(&state, &consumer, &added, &mut assigned, &mut streams).await;
            }
            message = consumer.recv() => match message {
                Ok(message) => handle(&state, &mut streams, &message),
                Err(error) => tracing::warn!(%error, "kafka consumer error (librdkafka retries by itself)"),
            },
            _ = crate::http::server::stopped(&mut shutdown) => break,
        }
    }
    Ok(())
}

/// Replay-stream names per partition (`topic/partition`), allocated once; the per-message lookup
/// allocates nothing.
#[derive(Debug, Default)]
struct Streams(HashMap<String, HashMap<i32, Arc<str>>>);

impl Streams {
    fn get(&mut self, topic: &str, partition: i32) -> Arc<str> {
        if let Some(s) = self.0.get(topic).and_then(|p| p.get(&partition)) {
            return s.clone();
        }
        let s: Arc<str> = Arc::from(format!("{topic}/{partition}"));
        self.0
            .entry(topic.to_owned())
            .or_default()
            .insert(partition, s.clone());
        s
    }
}

/// Messages behind the end of every assigned partition (end offset minus the consumer's
/// position), summed; published as `rig_kafka_consumer_lag_messages`.
async fn report_lag(state: &State, consumer: &Arc<StreamConsumer>) {
    let consumer = consumer.clone();
    let lag = tokio::task::spawn_blocking(move || {
        let positions = consumer.position().ok()?;
        let mut total: i64 = 0;
        for element in positions.elements() {
            let Offset::Offset(position) = element.offset() else {
                continue; // nothing consumed yet on this partition: no position to compare
            };
            if let Ok((_, high)) = consumer.fetch_watermarks(
                element.topic(),
                element.partition(),
                Duration::from_secs(5),
            ) {
                total += (high - position).max(0);
            }
        }
        Some(total)
    })
    .await;
    if let Ok(Some(lag)) = lag {
        state
            .metrics
            .consumer_lag
            .store(lag.max(0) as u64, Ordering::Relaxed);
    }
}

/// Add partitions that appeared since the last look, starting at their end.
async fn assign_new_partitions(
    state: &State,
    consumer: &Arc<StreamConsumer>,
    topics: &[String],
    assigned: &mut BTreeSet<(String, i32)>,
    streams: &mut Streams,
) {
    let consumer = consumer.clone();
    let topics = topics.to_vec();
    // Metadata calls block: keep them off the async workers.
    let found = tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        for topic in &topics {
            match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
                Ok(metadata) => {
                    for t in metadata.topics() {
                        if t.error().is_some() {
                            continue;
                        }
                        for p in t.partitions() {
                            // The end offset now: where this process starts (for replay floors).
                            let high = consumer
                                .fetch_watermarks(t.name(), p.id(), Duration::from_secs(5))
                                .map(|(_, high)| high)
                                .ok();
                            found.push(((t.name().to_owned(), p.id()), high));
                        }
                    }
                }
                Err(error) => tracing::debug!(%topic, %error, "metadata not available yet"),
            }
        }
        (consumer, found)
    })
    .await;
    let Ok((consumer, found)) = found else { return };
    let new: Vec<((String, i32), Option<i64>)> = found
        .into_iter()
        .filter(|(tp, high)| !assigned.contains(tp) && high.is_some())
        .collect();
    if new.is_empty() {
        return;
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), high) in &new {
        let offset = high.map_or(Offset::End, Offset::Offset);
        if let Err(error) = list.add_partition_offset(topic, *partition, offset) {
            tracing::warn!(%topic, partition, %error, "cannot add partition");
        }
    }
    match consumer.incremental_assign(&list) {
        Ok(()) => {
            for ((topic, partition), high) in new {
                if let Some(high) = high {
                    state.start_stream(&streams.get(&topic, partition), high);
                }
                tracing::info!(%topic, partition, offset = ?high, "assigned");
                state
                    .metrics
                    .assigned_partitions
                    .fetch_add(1, Ordering::Relaxed);
                assigned.insert((topic, partition));
            }
        }
        Err(error) => tracing::warn!(%error, "cannot assign partitions; retrying"),
    }
}

/// Stop reading partitions of topics that are no longer configured.
fn unassign_removed(
    state: &State,
    consumer: &StreamConsumer,
    topics: &[String],
    assigned: &mut BTreeSet<(String, i32)>,
) {
    let removed: Vec<(String, i32)> = assigned
        .iter()
        .filter(|(topic, _)| !topics.contains(topic))
        .cloned()
        .collect();
    if removed.is_empty() {
        return;
    }
    let mut list = TopicPartitionList::new();
    for (topic, partition) in &removed {
        list.add_partition(topic, *partition);
    }
    match consumer.incremental_unassign(&list) {
        Ok(()) => {
            for tp in removed {
                tracing::info!(topic = %tp.0, partition = tp.1, "unassigned (topic no longer configured)");
                state
                    .metrics
                    .assigned_partitions
                    .fetch_sub(1, Ordering::Relaxed);
                assigned.remove(&tp);
            }
        }
        Err(error) => tracing::warn!(%error, "cannot unassign partitions"),
    }
}

fn handle(state: &State, streams: &mut Streams, message: &rdkafka::message::BorrowedMessage<'_>) {
    let headers = message.headers();
    let pairs = headers
        .iter()
        .flat_map(|h| h.iter())
        .map(|h| (h.key, h.value));
    match events::from_kafka(pairs, message.payload()) {
        Ok(event) => {
            state
                .metrics
                .consumed_events
                .fetch_add(1, Ordering::Relaxed);
            let stream = streams.get(message.topic(), message.partition());
            state.publish_at(&stream, message.offset(), event);
        }
        Err(error) => {
            state
                .metrics
                .consumed_events_failed
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                %error,
                "skipping a Kafka message that is not a valid CloudEvent"
            );
        }
    }
}
