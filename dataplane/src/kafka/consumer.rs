//! The event consumer: every data-plane process reads **every** partition of its event topics
//! ([`super::every_partition`]), starting at the latest offset, and publishes each event to the
//! fan-out with its position (the resume token's part for that partition).
//!
//! Messages that are not CloudEvents are skipped: a warning and `rig_consumed_events_failed_total`,
//! never a stuck partition or a crash.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::Offset;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use tokio::sync::watch;

use super::every_partition::EveryPartition;
use super::history::{self, Fetched, Range};
use crate::events::{self, CloudEvent};
use crate::metrics::Metrics;
use crate::support::supervise::TaskHealth;

/// How often partition metadata is re-read (new topics, added partitions).
const METADATA_REFRESH: Duration = Duration::from_secs(5);
/// How long reading back a topic's recent history may take at its first look.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors that stop the consumer from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be created (bad configuration).
    #[error("cannot create the Kafka consumer")]
    Create(#[source] rdkafka::error::KafkaError),
}

/// Where consumed events go: the fan-out (implemented there; this module does not know it).
pub trait Sink: Send + Sync + 'static {
    /// This process starts reading `streams` (newly assigned partitions), each from the given
    /// position; `history` holds the events of the positions before their live start that were
    /// read back (for resuming clients, not to be delivered live).
    fn start_streams(
        &self,
        streams: &[(Arc<str>, i64)],
        history: Vec<(Arc<str>, i64, Arc<CloudEvent>)>,
    );
    /// An event read at `position` of `stream`.
    fn publish_at(&self, stream: &Arc<str>, position: i64, event: CloudEvent);
}

/// Consume the topics named by `topics` (which may change at run time) from `brokers` and publish
/// every event to the hub, until `shutdown`. At the first look at a topic, up to `history` of its
/// latest events (split evenly over its partitions) are read back for resuming clients. `health`
/// follows the broker (see [`super::every_partition`]); the caller supervises this task
/// (restarts it when it fails).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    owner: String,
    brokers: String,
    history: usize,
    mut topics: watch::Receiver<Vec<String>>,
    mut shutdown: watch::Receiver<bool>,
    health: Arc<TaskHealth>,
) -> Result<(), Error> {
    let mut reader = EveryPartition::new(
        &brokers,
        &format!("rig-dataplane-{owner}"),
        &[("fetch.wait.max.ms", "10")],
        health,
    )
    .map_err(Error::Create)?;
    tracing::info!(%brokers, topics = ?*topics.borrow(), "consuming events (every partition, from the latest offset)");
    // A restarted consumer starts over: no partition is assigned to it yet.
    metrics.assigned_partitions.store(0, Ordering::Relaxed);
    let mut streams = Streams::default();
    let assign = Assign {
        sink: &*sink,
        metrics: &metrics,
        brokers: &brokers,
        history,
    };
    let mut refresh = tokio::time::interval(METADATA_REFRESH);
    loop {
        tokio::select! {
            _ = refresh.tick() => {
                let current = topics.borrow().clone();
                assign.new_partitions(&mut reader, &current, &mut streams).await;
                report_lag(&metrics, reader.consumer()).await;
            }
            changed = topics.changed() => {
                if changed.is_err() {
                    continue;
                }
                let current = topics.borrow_and_update().clone();
                for (topic, partition) in reader.unassign_removed(&current) {
                    tracing::info!(%topic, partition, "unassigned (topic no longer configured)");
                    metrics.assigned_partitions.fetch_sub(1, Ordering::Relaxed);
                }
                // Only the topics this change added: one metadata round trip for a new route,
                // not one per topic already consumed (new partitions of those are found by the
                // periodic refresh).
                let added: Vec<String> = current
                    .iter()
                    .filter(|t| !reader.has_topic(t))
                    .cloned()
                    .collect();
                assign.new_partitions(&mut reader, &added, &mut streams).await;
            }
            message = reader.consumer().recv() => match message {
                Ok(message) => handle(&*sink, &metrics, &mut streams, &message),
                Err(error) => tracing::warn!(%error, "kafka consumer error (librdkafka retries by itself)"),
            },
            _ = crate::support::stopped(&mut shutdown) => break,
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
async fn report_lag(metrics: &Metrics, consumer: &Arc<StreamConsumer>) {
    let consumer = consumer.clone();
    let lag = tokio::task::spawn_blocking(move || {
        let positions = consumer.position().ok()?;
        let mut total: i64 = 0;
        for element in positions.elements() {
            let Offset::Offset(position) = element.offset() else {
                continue; // nothing consumed yet on this partition: no position to compare
            };
            // A partition whose end is unknown (broker unreachable) makes the sum unknown.
            let (_, high) = consumer
                .fetch_watermarks(element.topic(), element.partition(), Duration::from_secs(5))
                .ok()?;
            total += (high - position).max(0);
        }
        Some(total)
    })
    .await;
    match lag {
        Ok(Some(lag)) => {
            metrics
                .consumer_lag
                .store(lag.max(0) as u64, Ordering::Relaxed);
            metrics.consumer_lag_stale.store(0, Ordering::Relaxed);
        }
        // Keep the last known lag, marked stale, rather than report 0 during an outage.
        _ => metrics.consumer_lag_stale.store(1, Ordering::Relaxed),
    }
}

/// What assigning partitions needs.
struct Assign<'a> {
    sink: &'a dyn Sink,
    metrics: &'a Metrics,
    brokers: &'a str,
    history: usize,
}

impl Assign<'_> {
    /// Add partitions that appeared since the last look. Those found at the first look at their
    /// topic start at their end, and their latest events (`history` in all, split evenly) are
    /// read back first, so a client resuming after a restart gets what it missed from the replay
    /// window: one bounded read per process, never one per client. A partition whose history
    /// cannot be read in time starts at its end (its resumes are gaps).
    async fn new_partitions(
        &self,
        reader: &mut EveryPartition,
        topics: &[String],
        streams: &mut Streams,
    ) {
        let assigned = reader.assign_new(topics).await;
        if assigned.is_empty() {
            return;
        }
        let first_look = assigned.iter().filter(|a| a.first_look).count();
        let per_partition = i64::try_from(self.history / first_look.max(1)).unwrap_or(i64::MAX);
        let ranges: Vec<Range> = assigned
            .iter()
            .filter(|a| a.first_look && a.start > a.low && per_partition > 0)
            .map(|a| Range {
                stream: streams.get(&a.topic, a.partition),
                topic: a.topic.clone(),
                partition: a.partition,
                from: a.low.max(a.start.saturating_sub(per_partition)),
                to: a.start,
            })
            .collect();
        let mut read = Fetched::default();
        if !ranges.is_empty() {
            match history::fetch(self.brokers, ranges.clone(), self.history, HISTORY_TIMEOUT).await
            {
                Ok(fetched) => read = fetched,
                Err(error) => {
                    tracing::warn!(%error, "cannot read back recent history: resumes from before this start are gaps");
                }
            }
            if read.invalid > 0 {
                self.metrics
                    .consumed_events_failed
                    .fetch_add(read.invalid, Ordering::Relaxed);
            }
        }
        let mut starts = Vec::with_capacity(assigned.len());
        for a in &assigned {
            let stream = streams.get(&a.topic, a.partition);
            let from = ranges
                .iter()
                .find(|r| r.stream == stream && read.covered.contains_key(&stream))
                .map_or(a.start, |r| r.from);
            tracing::info!(
                topic = %a.topic,
                partition = a.partition,
                offset = a.start,
                history_from = from,
                "assigned"
            );
            starts.push((stream, from));
        }
        // Only wholly read ranges: a partial one would claim positions it does not hold.
        let history = read
            .events
            .into_iter()
            .filter(|(stream, ..)| read.covered.contains_key(stream))
            .collect();
        self.sink.start_streams(&starts, history);
        self.metrics
            .assigned_partitions
            .fetch_add(assigned.len() as u64, Ordering::Relaxed);
    }
}

fn handle(
    sink: &dyn Sink,
    metrics: &Metrics,
    streams: &mut Streams,
    message: &rdkafka::message::BorrowedMessage<'_>,
) {
    let headers = message.headers();
    let pairs = headers
        .iter()
        .flat_map(|h| h.iter())
        .map(|h| (h.key, h.value));
    match events::from_kafka(pairs, message.payload()) {
        Ok(event) => {
            metrics.consumed_events.fetch_add(1, Ordering::Relaxed);
            let stream = streams.get(message.topic(), message.partition());
            sink.publish_at(&stream, message.offset(), event);
        }
        Err(error) => {
            metrics
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
