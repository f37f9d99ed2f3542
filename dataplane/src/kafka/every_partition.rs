//! The one "read every partition" consumer, used by the event consumer ([`super::consumer`]) and
//! the proxy's response consumer (`proxy::kafka`).
//!
//! Every data-plane process reads every partition of its topics: no group membership, no
//! rebalancing, no commits (RIG's shared group gave each replica a share of the events, RIG issue
//! #332). Partitions are discovered from metadata; [`EveryPartition::assign_new`] is called
//! periodically and when topics are added, so new topics and added partitions are picked up.
//! Where reading starts: the partitions found at the first look at a topic start at their end
//! (history is not replayed); a partition found later — a topic that did not exist yet, or a
//! partition added since — starts at its beginning, because everything in it is newer than that
//! first look (otherwise the first events of a topic created after start would be lost).
//! librdkafka reconnects to the brokers by itself.
//!
//! Each metadata round trip also tells whether the broker answers: the reader's [`TaskHealth`]
//! follows it, so `/readyz` says not ready while events cannot flow (a broker down at start, or
//! gone since), and ready again once it answers.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::support::supervise::TaskHealth;

/// How long one metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A partition assigned by [`EveryPartition::assign_new`], and the offset reading starts at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Where this process starts reading: the end offset when it was assigned, or the beginning
    /// for a partition that appeared after the first look at its topic.
    pub start: i64,
    /// The first offset Kafka still holds when it was assigned.
    pub low: i64,
    /// Whether it was found at the first look at its topic (so it starts at its end, and what
    /// precedes `start` is history).
    pub first_look: bool,
}

/// A consumer reading every partition of its topics (module docs).
pub struct EveryPartition {
    consumer: Arc<StreamConsumer>,
    assigned: BTreeSet<(String, i32)>,
    /// Topics whose metadata the broker has answered at least once (existing or not).
    looked: BTreeSet<String>,
    health: Arc<TaskHealth>,
}

impl std::fmt::Debug for EveryPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EveryPartition")
            .field("assigned", &self.assigned)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl EveryPartition {
    /// A consumer of `brokers` with the common settings plus `extra` ones. `name` makes the
    /// (never joined) `group.id` librdkafka requires.
    pub fn new(
        brokers: &str,
        name: &str,
        extra: &[(&str, &str)],
        health: Arc<TaskHealth>,
    ) -> Result<Self, KafkaError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("group.id", name)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "latest")
            .set("topic.metadata.refresh.interval.ms", "5000");
        for (key, value) in extra {
            config.set(*key, *value);
        }
        Ok(Self {
            consumer: Arc::new(config.create()?),
            assigned: BTreeSet::new(),
            looked: BTreeSet::new(),
            health,
        })
    }

    /// The consumer, to receive messages and read positions.
    pub fn consumer(&self) -> &Arc<StreamConsumer> {
        &self.consumer
    }

    /// Whether `topic` has an assigned partition.
    pub fn has_topic(&self, topic: &str) -> bool {
        self.assigned.iter().any(|(t, _)| t == topic)
    }

    /// Assign the partitions of `topics` not assigned yet, each at its end offset; returns them.
    /// The metadata requests run off the async workers (they block). Marks the reader healthy
    /// when the broker answered, unhealthy when it did not.
    pub async fn assign_new(&mut self, topics: &[String]) -> Vec<Assigned> {
        let consumer = self.consumer.clone();
        let topics = topics.to_vec();
        let found = tokio::task::spawn_blocking(move || {
            let mut answered = false;
            let mut looked = Vec::new();
            let mut found = Vec::new();
            if topics.is_empty() {
                // Nothing to read, but readiness still means "the broker answers".
                answered = consumer.fetch_metadata(None, REQUEST_TIMEOUT).is_ok();
            }
            for topic in &topics {
                let metadata = match consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT) {
                    Ok(metadata) => metadata,
                    Err(error) => {
                        tracing::debug!(%topic, %error, "metadata not available");
                        continue;
                    }
                };
                answered = true;
                looked.push(topic.clone());
                for t in metadata.topics().iter().filter(|t| t.error().is_none()) {
                    for p in t.partitions() {
                        if let Ok((low, high)) =
                            consumer.fetch_watermarks(t.name(), p.id(), REQUEST_TIMEOUT)
                        {
                            found.push((t.name().to_owned(), p.id(), low, high));
                        }
                    }
                }
            }
            (answered, looked, found)
        })
        .await;
        let Ok((answered, looked, found)) = found else {
            return Vec::new();
        };
        self.health.set_healthy(answered);
        let new: Vec<Assigned> = found
            .into_iter()
            .filter(|(t, p, _, _)| !self.assigned.contains(&(t.clone(), *p)))
            .map(|(topic, partition, low, high)| {
                // Seen before without this partition: it is newer than our first look.
                let first_look = !self.looked.contains(&topic);
                Assigned {
                    start: if first_look { high } else { low },
                    low,
                    first_look,
                    topic,
                    partition,
                }
            })
            .collect();
        self.looked.extend(looked);
        if new.is_empty() {
            return new;
        }
        let mut list = TopicPartitionList::new();
        for a in &new {
            if let Err(error) =
                list.add_partition_offset(&a.topic, a.partition, Offset::Offset(a.start))
            {
                tracing::warn!(topic = %a.topic, partition = a.partition, %error, "cannot add partition");
            }
        }
        match self.consumer.incremental_assign(&list) {
            Ok(()) => {
                for a in &new {
                    self.assigned.insert((a.topic.clone(), a.partition));
                }
                new
            }
            Err(error) => {
                tracing::warn!(%error, "cannot assign partitions; retrying");
                Vec::new()
            }
        }
    }

    /// Stop reading the partitions of topics not in `topics`; returns them.
    pub fn unassign_removed(&mut self, topics: &[String]) -> Vec<(String, i32)> {
        let removed: Vec<(String, i32)> = self
            .assigned
            .iter()
            .filter(|(topic, _)| !topics.contains(topic))
            .cloned()
            .collect();
        if removed.is_empty() {
            return removed;
        }
        let mut list = TopicPartitionList::new();
        for (topic, partition) in &removed {
            list.add_partition(topic, *partition);
        }
        match self.consumer.incremental_unassign(&list) {
            Ok(()) => {
                for tp in &removed {
                    self.assigned.remove(tp);
                    // Configured again later, it starts at its end again (no replay).
                    self.looked.remove(&tp.0);
                }
                removed
            }
            Err(error) => {
                tracing::warn!(%error, "cannot unassign partitions");
                Vec::new()
            }
        }
    }
}
