//! The hub: every open frontend connection of this process, and the fan-out of events to them.
//!
//! Each connection owns a bounded queue ([`super::queue`]) drained by its response body. Publishing an event
//! encodes its frame once, asks the subscription index which connections match (work proportional
//! to the matches, not to all connections) and `try_send`s an `Arc` of the frame to each: the bytes
//! are shared, and a full queue never blocks the publisher.
//!
//! Slow-consumer policy: a connection whose queue is full when an event arrives is closed (it is
//! removed from the hub, so its body ends after writing what is already queued), counted in
//! `rig_queue_drops_total` and logged. A client that reconnects with its last event id gets the
//! missed events from the replay window, so closing is lossless for well-behaved clients.
//!
//! Sessions: each connection belongs to the JWT sessions it authenticated with (the `jwt` it
//! connected with, the bearer tokens of its subscription updates; RIG's process groups). An index
//! session → connections, sharded like the connection table, lets a revocation close a session's
//! connections without walking all of them ([`Hub::kill_session`]). Lock order: a connection shard,
//! then a session shard; never the other way round.
//!
//! Token expiry (`RIG_CLOSE_AT_TOKEN_EXPIRY`): a connection's deadline is kept in its entry and in
//! the expiry index ([`Expiries`]), updated together under the connection shard's lock (then the
//! index's lock), so a closed connection leaves the index at once ([`Hub::expire_due`]).

use crate::support::{lock, read, write};
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::time::Instant;

use crate::connections::expiry::Expiries;
use crate::connections::feed::Feed;
use crate::connections::queue;
use crate::events::CloudEvent;
use crate::events::frame::Frame;
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
    tx: queue::Sender,
    transport: Transport,
    /// The sessions it joined (usually none or one; an empty box does not allocate).
    sessions: Box<[Arc<str>]>,
    /// When its JWT expires (`RIG_CLOSE_AT_TOKEN_EXPIRY`); `None`: never (also in `expiries`).
    expires: Option<Instant>,
    /// Whether published events are queued to it; `false` while it catches up from the replay
    /// window ([`super::feed`]), which then switches it on under the window's lock.
    live: bool,
}

/// A session already holds the configured maximum of connections (`MAX_CONNECTIONS_PER_SESSION`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session {session:?} already has {limit} connections")]
pub struct SessionLimit {
    /// The session.
    pub session: Arc<str>,
    /// The limit.
    pub limit: usize,
}

/// Every open connection of this process, indexed by subscription.
#[derive(Debug)]
pub struct Hub {
    index: Index,
    extractors: RwLock<Arc<Extractors>>,
    shards: [RwLock<HashMap<ConnId, Entry>>; SHARDS],
    /// Session → its open connections, sharded by a hash of the session.
    sessions: [Mutex<HashMap<Arc<str>, HashSet<ConnId>>>; SHARDS],
    session_hasher: std::collections::hash_map::RandomState,
    /// Connections by the deadline of their JWT (only with `RIG_CLOSE_AT_TOKEN_EXPIRY`).
    expiries: Expiries,
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
    /// The connection's queue (and its replay, while it catches up).
    pub rx: Feed,
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
            sessions: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            session_hasher: std::collections::hash_map::RandomState::new(),
            expiries: Expiries::new(),
            next_id: AtomicU64::new(1),
            queue_capacity: queue_capacity.max(4),
            metrics,
        }
    }

    fn shard(&self, id: ConnId) -> &RwLock<HashMap<ConnId, Entry>> {
        &self.shards[(id as usize) & (SHARDS - 1)]
    }

    fn session_shard(&self, session: &str) -> &Mutex<HashMap<Arc<str>, HashSet<ConnId>>> {
        &self.sessions[(self.session_hasher.hash_one(session) as usize) & (SHARDS - 1)]
    }

    /// Register a new connection with its subscriptions; its queue holds the configured capacity.
    /// A connection that is not `live` gets no published events until [`Self::go_live`].
    pub fn register(
        self: &Arc<Self>,
        transport: Transport,
        subs: &[Subscription],
        live: bool,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = queue::channel(self.queue_capacity);
        write(self.shard(id)).insert(
            id,
            Entry {
                tx,
                transport,
                sessions: Box::default(),
                expires: None,
                live,
            },
        );
        self.index.set(id, subs);
        self.metrics.connection_opened(transport);
        Registration {
            id,
            rx: Feed::new(rx),
            guard: Guard {
                hub: self.clone(),
                id,
            },
        }
    }

    /// Start queuing published events to connection `id` (it caught up with the replay window;
    /// the caller holds the window's lock, so no event falls between); `false` when it is gone.
    pub fn go_live(&self, id: ConnId) -> bool {
        write(self.shard(id))
            .get_mut(&id)
            .map(|entry| entry.live = true)
            .is_some()
    }

    /// Whether `event` matches the subscriptions of connection `id`.
    pub fn matches(&self, id: ConnId, event: &CloudEvent) -> bool {
        self.index.matches(id, event)
    }

    /// Replace the subscriptions of connection `id`; `false` when it is not (or no longer) here.
    pub fn set_subscriptions(&self, id: ConnId, subs: &[Subscription]) -> bool {
        if !read(self.shard(id)).contains_key(&id) {
            return false;
        }
        self.index.set(id, subs);
        true
    }

    /// Add connection `id` to `sessions` (it stays in the sessions it joined before). With
    /// `limit`, a session that already has `limit` other connections refuses it, and the
    /// connection then joins none of `sessions`. `Ok(false)` when the connection is not (or no
    /// longer) here.
    pub fn join_sessions(
        &self,
        id: ConnId,
        sessions: &[Arc<str>],
        limit: Option<usize>,
    ) -> Result<bool, SessionLimit> {
        let mut shard = write(self.shard(id));
        let Some(entry) = shard.get_mut(&id) else {
            return Ok(false);
        };
        let mut new: Vec<Arc<str>> = Vec::new();
        for session in sessions {
            if !entry.sessions.contains(session) && !new.contains(session) {
                new.push(session.clone());
            }
        }
        for (i, session) in new.iter().enumerate() {
            let mut index = lock(self.session_shard(session));
            let members = index.entry(session.clone()).or_default();
            if let Some(limit) = limit
                && members.len() >= limit
            {
                if members.is_empty() {
                    index.remove(session);
                }
                drop(index);
                self.leave_sessions(id, &new[..i]);
                return Err(SessionLimit {
                    session: session.clone(),
                    limit,
                });
            }
            members.insert(id);
        }
        if !new.is_empty() {
            let mut all = std::mem::take(&mut entry.sessions).into_vec();
            all.extend(new);
            entry.sessions = all.into_boxed_slice();
        }
        Ok(true)
    }

    /// Close every connection of `session`: each is removed from the hub and gets
    /// `Outbound::Close(Some(frame))` (the transports turn it into `rig.session_killed` or a
    /// WebSocket close). A connection whose queue is full is removed all the same; its stream then
    /// ends after what is queued. Returns how many connections were closed.
    pub fn kill_session(&self, session: &str, frame: &Arc<Frame>) -> usize {
        let members = lock(self.session_shard(session)).remove(session);
        let mut killed = 0;
        for id in members.into_iter().flatten() {
            if let Some(entry) = self.remove(id) {
                let _ = entry.tx.try_send(Outbound::Close(Some(frame.clone())));
                killed += 1;
            }
        }
        killed
    }

    /// Close connection `id` at `deadline` unless it already closes later (a later token extends
    /// the deadline, an earlier one never shortens it). `false` when the connection is not (or no
    /// longer) here.
    pub fn extend_expiry(&self, id: ConnId, deadline: Instant) -> bool {
        let mut shard = write(self.shard(id));
        let Some(entry) = shard.get_mut(&id) else {
            return false;
        };
        if entry.expires.is_some_and(|at| at >= deadline) {
            return true;
        }
        self.expiries.set(id, entry.expires, deadline);
        entry.expires = Some(deadline);
        true
    }

    /// The expiry index (for its sweeper).
    pub fn expiries(&self) -> &Expiries {
        &self.expiries
    }

    /// Close every connection whose deadline is due at `now`: each is removed from the hub and
    /// gets `Outbound::Close(Some(frame))` (`rig.session_expired`; WebSocket turns it into a
    /// close frame). Returns how many were closed, by transport (indexed by `Transport as
    /// usize`), and the next deadline.
    pub fn expire_due(&self, now: Instant, frame: &Arc<Frame>) -> ([usize; 3], Option<Instant>) {
        let (due, next) = self.expiries.take_due(now);
        let mut closed = [0; 3];
        for (at, id) in due {
            // Only if the deadline is still this one: an extension meanwhile set a new entry.
            if let Some(entry) = self.remove_if(id, |e| e.expires == Some(at)) {
                let _ = entry.tx.try_send(Outbound::Close(Some(frame.clone())));
                closed[entry.transport as usize] += 1;
            }
        }
        (closed, next)
    }

    /// Open connections of `session` in this process.
    pub fn session_connections(&self, session: &str) -> usize {
        lock(self.session_shard(session))
            .get(session)
            .map_or(0, HashSet::len)
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

    /// Forward `event`, encoded once as `frame`, to every matching live connection. Returns the
    /// number of connections the frame was queued to.
    pub fn publish(&self, event: &CloudEvent, frame: &Arc<Frame>) -> usize {
        let mut matches = Vec::new();
        self.index.matching(event, &mut matches);
        if matches.is_empty() {
            return 0;
        }
        let mut delivered = 0;
        let mut overflowed = Vec::new();
        for id in matches {
            let shard = read(self.shard(id));
            let Some(entry) = shard.get(&id).filter(|e| e.live) else {
                continue;
            };
            match entry.tx.try_send(Outbound::Frame(frame.clone())) {
                Ok(()) => delivered += 1,
                Err(queue::TrySendError::Full) => overflowed.push(id),
                Err(queue::TrySendError::Closed) => {}
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

    /// Queue a heartbeat to the SSE and WebSocket connections of one of [`Self::HEARTBEAT_PARTS`]
    /// parts of the hub. The shared timer calls it once per `interval / HEARTBEAT_PARTS`, one part
    /// after the other: each connection still gets one heartbeat per interval (a full queue already
    /// has data to send, so a skipped heartbeat does not matter), and no tick writes
    /// to every connection at once (a 10k-write burst that events arriving meanwhile wait behind).
    pub fn heartbeat_part(&self, part: usize) {
        for entry in read(&self.shards[part % SHARDS]).values() {
            if matches!(entry.transport, Transport::Sse | Transport::Ws) {
                let _ = entry.tx.try_send(Outbound::Heartbeat);
            }
        }
    }

    /// How many parts [`Self::heartbeat_part`] splits the connections into.
    pub const HEARTBEAT_PARTS: usize = SHARDS;

    /// Ask every connection to close (graceful shutdown): SSE clients then reconnect elsewhere.
    pub fn close_all(&self) {
        for shard in &self.shards {
            let entries: Vec<(ConnId, Entry)> = write(shard).drain().collect();
            for (id, entry) in entries {
                self.leave_sessions(id, &entry.sessions);
                if let Some(at) = entry.expires {
                    self.expiries.remove(id, at);
                }
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
        self.remove(id);
    }

    /// Remove connection `id` from the table, its sessions and the index; the entry, if it was
    /// here (its queue's sender is dropped with it, which ends the stream once drained).
    fn remove(&self, id: ConnId) -> Option<Entry> {
        self.remove_if(id, |_| true)
    }

    /// [`Self::remove`], if the connection's entry satisfies `condition` (checked under the same
    /// lock).
    fn remove_if(&self, id: ConnId, condition: impl FnOnce(&Entry) -> bool) -> Option<Entry> {
        let removed = {
            let mut shard = write(self.shard(id));
            let removed = if shard.get(&id).is_some_and(condition) {
                shard.remove(&id)
            } else {
                None
            };
            // Under the connection shard's lock, so a concurrent `join_sessions` cannot re-add it.
            if let Some(entry) = &removed {
                self.leave_sessions(id, &entry.sessions);
                if let Some(at) = entry.expires {
                    self.expiries.remove(id, at);
                }
            }
            removed
        };
        if let Some(entry) = &removed {
            self.index.remove(id);
            self.metrics.connection_closed(entry.transport);
        }
        removed
    }

    fn leave_sessions(&self, id: ConnId, sessions: &[Arc<str>]) {
        for session in sessions {
            let mut index = lock(self.session_shard(session));
            if let Some(members) = index.get_mut(session) {
                members.remove(&id);
                if members.is_empty() {
                    index.remove(session);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Arc<Hub> {
        let metrics = Arc::new(Metrics::default());
        Arc::new(Hub::new(Arc::new(Extractors::new()), 8, metrics))
    }

    fn killed() -> Arc<Frame> {
        let event = CloudEvent::new_rig("rig.session_killed", serde_json::json!({}));
        Arc::new(Frame::new(&event, None))
    }

    fn s(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[tokio::test]
    async fn killing_a_session_closes_exactly_its_connections() {
        let hub = hub();
        let mut x1 = hub.register(Transport::Sse, &[], true);
        let mut x2 = hub.register(Transport::Ws, &[], true);
        let mut y = hub.register(Transport::Sse, &[], true);
        assert_eq!(hub.join_sessions(x1.id, &[s("x")], None), Ok(true));
        assert_eq!(hub.join_sessions(x2.id, &[s("x"), s("x")], None), Ok(true));
        assert_eq!(hub.join_sessions(y.id, &[s("y")], None), Ok(true));
        assert_eq!(hub.session_connections("x"), 2);

        assert_eq!(hub.kill_session("x", &killed()), 2);
        for reg in [&mut x1, &mut x2] {
            match reg.rx.recv().await {
                Some(Outbound::Close(Some(frame))) => {
                    assert_eq!(frame.event_type, "rig.session_killed");
                }
                other => panic!("expected the kill, got {other:?}"),
            }
            assert!(
                reg.rx.recv().await.is_none(),
                "the queue ends after the kill"
            );
        }
        assert!(!hub.contains(x1.id) && !hub.contains(x2.id));
        assert!(hub.contains(y.id));
        assert!(y.rx.try_recv().is_err(), "the other session got nothing");
        assert_eq!(hub.session_connections("x"), 0);
        assert_eq!(hub.kill_session("x", &killed()), 0, "nothing left to kill");
        assert_eq!(hub.len(), 1);
    }

    #[tokio::test]
    async fn a_connection_in_two_sessions_dies_with_either_and_leaves_both_indexes() {
        let hub = hub();
        let a = hub.register(Transport::Sse, &[], true);
        assert_eq!(hub.join_sessions(a.id, &[s("x")], None), Ok(true));
        // A subscription update with another session's token joins it as well.
        assert_eq!(hub.join_sessions(a.id, &[s("y")], None), Ok(true));
        assert_eq!(hub.session_connections("x"), 1);
        assert_eq!(hub.session_connections("y"), 1);
        assert_eq!(hub.kill_session("y", &killed()), 1);
        assert_eq!(
            hub.session_connections("x"),
            0,
            "removed from every session"
        );
        assert!(!hub.contains(a.id));
    }

    #[tokio::test]
    async fn unregistering_leaves_the_session_index_and_unknown_connections_join_nothing() {
        let hub = hub();
        let a = hub.register(Transport::LongPolling, &[], true);
        let id = a.id;
        assert_eq!(hub.join_sessions(id, &[s("x")], None), Ok(true));
        drop(a);
        assert_eq!(hub.session_connections("x"), 0);
        assert_eq!(hub.join_sessions(id, &[s("x")], None), Ok(false));
        assert_eq!(hub.session_connections("x"), 0);
    }

    #[tokio::test]
    async fn the_per_session_limit_refuses_beyond_it_and_frees_up_on_close() {
        let hub = hub();
        let a = hub.register(Transport::Sse, &[], true);
        let b = hub.register(Transport::Sse, &[], true);
        let c = hub.register(Transport::Sse, &[], true);
        assert_eq!(hub.join_sessions(a.id, &[s("x")], Some(2)), Ok(true));
        assert_eq!(hub.join_sessions(b.id, &[s("x")], Some(2)), Ok(true));
        let refused = hub
            .join_sessions(c.id, &[s("z"), s("x")], Some(2))
            .expect_err("x is full");
        assert_eq!(&*refused.session, "x");
        assert_eq!(
            hub.session_connections("z"),
            0,
            "a refused join joins nothing"
        );
        assert_eq!(
            hub.join_sessions(a.id, &[s("x")], Some(2)),
            Ok(true),
            "rejoining is free"
        );
        drop(a);
        assert_eq!(hub.join_sessions(c.id, &[s("x")], Some(2)), Ok(true));
        assert_eq!(hub.session_connections("x"), 2);
    }
}
