//! The hub: every open frontend connection of this process, and the fan-out of events to them.
//!
//! Each connection owns a bounded queue (`mpsc`) drained by its response body. Publishing an event
//! encodes its frame once, asks the subscription index which connections match (work proportional
//! to the matches, not to all connections) and `try_send`s an `Arc` of the frame to each: the bytes
//! are shared, and a full queue never blocks the publisher.
//!
//! Slow-consumer policy: a connection whose queue is full when an event arrives is closed (it is
//! removed from the hub, so its body ends after writing what is already queued), counted in
//! `rig_queue_drops_total` and logged. A client that reconnects with its last event id gets the
//! missed events from the replay window, so closing is lossless for well-behaved clients.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use super::frame::Frame;
use crate::events::CloudEvent;
use crate::metrics::{Metrics, Transport};
use crate::subscriptions::{ConnId, Extractors, Index, Subscription};

/// Shards of the connection table; a power of two, so the shard is `id & (SHARDS - 1)`.
const SHARDS: usize = 16;

/// What a connection's queue carries.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// An event frame, shared with every other receiver of the event.
    Frame(Arc<Frame>),
    /// A heartbeat (from the shared heartbeat timer).
    Heartbeat,
    /// Close the connection after sending this frame (e.g. `rig.session_killed`).
    Close(Option<Arc<Frame>>),
}

/// The hub's handle on one connection.
#[derive(Debug)]
struct Entry {
    tx: mpsc::Sender<Outbound>,
    transport: Transport,
}

/// Every open connection of this process, indexed by subscription.
#[derive(Debug)]
pub struct Hub {
    index: Index,
    extractors: RwLock<Arc<Extractors>>,
    shards: [RwLock<HashMap<ConnId, Entry>>; SHARDS],
    next_id: AtomicU64,
    queue_capacity: usize,
    metrics: Arc<Metrics>,
}

/// A registered connection: its id, its queue, and a guard that unregisters it when dropped (the
/// client went away, or the response body was dropped for any other reason).
#[derive(Debug)]
pub struct Registration {
    /// The connection's id in this process.
    pub id: ConnId,
    /// The connection's queue.
    pub rx: mpsc::Receiver<Outbound>,
    /// Unregisters on drop.
    pub guard: Guard,
}

/// Removes a connection from the hub when dropped.
#[derive(Debug)]
pub struct Guard {
    hub: Arc<Hub>,
    id: ConnId,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.hub.unregister(self.id);
    }
}

impl Hub {
    /// An empty hub; each connection queue holds up to `queue_capacity` frames.
    pub fn new(extractors: Arc<Extractors>, queue_capacity: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            index: Index::new(extractors.clone()),
            extractors: RwLock::new(extractors),
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            next_id: AtomicU64::new(1),
            queue_capacity: queue_capacity.max(4),
            metrics,
        }
    }

    fn shard(&self, id: ConnId) -> &RwLock<HashMap<ConnId, Entry>> {
        &self.shards[(id as usize) & (SHARDS - 1)]
    }

    /// Register a new connection with its subscriptions; its queue holds the configured capacity
    /// plus `extra` frames (room for a replay queued at once).
    pub fn register(
        self: &Arc<Self>,
        transport: Transport,
        subs: &[Subscription],
        extra: usize,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.queue_capacity + extra);
        write(self.shard(id)).insert(id, Entry { tx, transport });
        self.index.set(id, subs);
        self.metrics.connection_opened(transport);
        Registration {
            id,
            rx,
            guard: Guard {
                hub: self.clone(),
                id,
            },
        }
    }

    /// Replace the subscriptions of connection `id`; `false` when it is not (or no longer) here.
    pub fn set_subscriptions(&self, id: ConnId, subs: &[Subscription]) -> bool {
        if !read(self.shard(id)).contains_key(&id) {
            return false;
        }
        self.index.set(id, subs);
        true
    }

    /// Whether connection `id` is open here.
    pub fn contains(&self, id: ConnId) -> bool {
        read(self.shard(id)).contains_key(&id)
    }

    /// Queue `item` to connection `id` (for events addressed to one connection, such as
    /// `rig.subscriptions_set`); `false` when the connection is gone or its queue is full.
    pub fn send_to(&self, id: ConnId, item: Outbound) -> bool {
        read(self.shard(id))
            .get(&id)
            .is_some_and(|e| e.tx.try_send(item).is_ok())
    }

    /// Swap the extractor configuration (config reload); stored subscriptions are re-keyed.
    pub fn set_extractors(&self, extractors: Arc<Extractors>) {
        *write(&self.extractors) = extractors.clone();
        self.index.set_extractors(extractors);
    }

    /// The extractor configuration in effect (for JWT-derived subscriptions).
    pub fn extractors(&self) -> Arc<Extractors> {
        read(&self.extractors).clone()
    }

    /// Forward `event` to every matching connection. `id` is the resume token written on the SSE
    /// frame. Returns the number of connections the frame was queued to.
    pub fn publish(&self, event: &CloudEvent, id: Option<&str>) -> usize {
        let mut matches = Vec::new();
        self.index.matching(event, &mut matches);
        if matches.is_empty() {
            return 0;
        }
        let frame = Arc::new(Frame::new(event, id));
        let mut delivered = 0;
        let mut overflowed = Vec::new();
        for id in matches {
            let shard = read(self.shard(id));
            let Some(entry) = shard.get(&id) else {
                continue;
            };
            match entry.tx.try_send(Outbound::Frame(frame.clone())) {
                Ok(()) => delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => overflowed.push(id),
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        self.metrics
            .forwarded_events
            .fetch_add(delivered as u64, Ordering::Relaxed);
        for id in overflowed {
            self.metrics.queue_drops.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                connection = id,
                event_type = %frame.event_type,
                capacity = self.queue_capacity,
                "slow consumer: queue full, closing the connection"
            );
            self.unregister(id);
        }
        delivered
    }

    /// Queue a heartbeat to every connection of `transport` (called by the shared timer). A full
    /// queue already has data to send, so a skipped heartbeat does not matter.
    pub fn heartbeat(&self, transport: Transport) {
        for shard in &self.shards {
            for entry in read(shard).values() {
                if entry.transport == transport {
                    let _ = entry.tx.try_send(Outbound::Heartbeat);
                }
            }
        }
    }

    /// Ask every connection to close (graceful shutdown): SSE clients then reconnect elsewhere.
    pub fn close_all(&self) {
        for shard in &self.shards {
            let entries: Vec<(ConnId, Entry)> = write(shard).drain().collect();
            for (id, entry) in entries {
                let _ = entry.tx.try_send(Outbound::Close(None));
                self.index.remove(id);
                self.metrics.connection_closed(entry.transport);
            }
        }
    }

    /// Subscriptions of all open connections (for the `rig_subscriptions_total` gauge).
    pub fn subscription_count(&self) -> usize {
        self.index.subscription_count()
    }

    /// Open connections of this process.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| read(s).len()).sum()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn unregister(&self, id: ConnId) {
        let removed = write(self.shard(id)).remove(&id);
        self.index.remove(id);
        if let Some(entry) = removed {
            self.metrics.connection_closed(entry.transport);
        }
    }
}

// A poisoned lock means a panic while holding it; the map itself is still consistent (all updates
// are single inserts/removes), so keep serving rather than crash every connection.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
