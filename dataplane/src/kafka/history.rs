//! Reading a range of a partition's history, for a client that resumes from a position older than
//! the replay window (typically: the data plane restarted, so its window is empty).
//!
//! A short-lived consumer is assigned `[from, to)` of each partition (no group, no commits), reads
//! until every range is done or the deadline passes, and returns the events in partition order.
//! Ranges whose start Kafka already deleted (retention) are reported as not covered, so the caller
//! sends `rig.connection.gap` instead of pretending.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::events::{self, CloudEvent};

/// One partition range to read: `[from, to)`.
#[derive(Debug, Clone)]
pub struct Range {
    /// The replay stream name (`topic/partition`).
    pub stream: Arc<str>,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset wanted.
    pub from: i64,
    /// First offset not wanted (where the live stream starts).
    pub to: i64,
}

/// What was read.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Events in partition order (partitions one after the other), with stream and offset.
    pub events: Vec<(Arc<str>, i64, Arc<CloudEvent>)>,
    /// For each stream whose whole range was read: the end of the range.
    pub covered: BTreeMap<Arc<str>, i64>,
    /// Messages in the ranges that were not CloudEvents (skipped).
    pub invalid: u64,
}

/// An event read at an offset.
type Read = (i64, Arc<CloudEvent>);

/// Why history could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The consumer could not be created or assigned.
    #[error("cannot read Kafka history")]
    Kafka(#[source] rdkafka::error::KafkaError),
    /// The blocking reader task failed.
    #[error("the Kafka history reader stopped unexpectedly")]
    Task(#[source] tokio::task::JoinError),
}

/// Read `ranges` from `brokers`, at most `max_events` events, within `timeout`.
pub async fn fetch(
    brokers: &str,
    ranges: Vec<Range>,
    max_events: usize,
    timeout: Duration,
) -> Result<Fetched, Error> {
    let brokers = brokers.to_owned();
    tokio::task::spawn_blocking(move || fetch_blocking(&brokers, &ranges, max_events, timeout))
        .await
        .map_err(Error::Task)?
}

fn fetch_blocking(
    brokers: &str,
    ranges: &[Range],
    max_events: usize,
    timeout: Duration,
) -> Result<Fetched, Error> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "rig-dataplane-history")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(Error::Kafka)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut fetched = Fetched::default();
    let mut list = TopicPartitionList::new();
    // Per (topic, partition): the range and the next offset still missing.
    let mut open: BTreeMap<(String, i32), (Range, i64)> = BTreeMap::new();
    for range in ranges {
        if range.from >= range.to {
            fetched.covered.insert(range.stream.clone(), range.to);
            continue;
        }
        let low = consumer
            .fetch_watermarks(&range.topic, range.partition, timeout)
            .map(|(low, _)| low)
            .map_err(Error::Kafka)?;
        if range.from < low {
            // Deleted by retention: the client's position cannot be served.
            tracing::info!(stream = %range.stream, from = range.from, low, "history already deleted");
            continue;
        }
        list.add_partition_offset(&range.topic, range.partition, Offset::Offset(range.from))
            .map_err(Error::Kafka)?;
        open.insert(
            (range.topic.clone(), range.partition),
            (range.clone(), range.from),
        );
    }
    if open.is_empty() {
        return Ok(fetched);
    }
    consumer.assign(&list).map_err(Error::Kafka)?;
    let mut per_partition: BTreeMap<(String, i32), Vec<Read>> = BTreeMap::new();
    let mut total = 0usize;
    while !open.is_empty() && total < max_events {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let Some(result) = consumer.poll(left.min(Duration::from_millis(200))) else {
            continue;
        };
        let message = match result {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "reading Kafka history");
                continue;
            }
        };
        let key = (message.topic().to_owned(), message.partition());
        let Some((range, next)) = open.get_mut(&key) else {
            continue;
        };
        let offset = message.offset();
        if offset < *next {
            continue;
        }
        if offset < range.to {
            let headers = message.headers();
            let pairs = headers
                .iter()
                .flat_map(|h| h.iter())
                .map(|h| (h.key, h.value));
            match events::from_kafka(pairs, message.payload()) {
                Ok(event) => {
                    per_partition
                        .entry(key.clone())
                        .or_default()
                        .push((offset, Arc::new(event)));
                    total += 1;
                }
                Err(_) => fetched.invalid += 1,
            }
        }
        *next = offset + 1;
        if *next >= range.to {
            fetched.covered.insert(range.stream.clone(), range.to);
            open.remove(&key);
        }
    }
    for ((topic, partition), events) in per_partition {
        let stream = ranges
            .iter()
            .find(|r| r.topic == topic && r.partition == partition)
            .map(|r| r.stream.clone());
        if let Some(stream) = stream {
            for (offset, event) in events {
                fetched.events.push((stream.clone(), offset, event));
            }
        }
    }
    Ok(fetched)
}
