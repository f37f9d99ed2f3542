//! The fan-out: open connections (the [`Hub`]), the replay window and the connection tokens,
//! owning the publish order guarantee. An event is recorded in the window and queued to every
//! matching connection under the window lock, and a connection is registered (with its replay)
//! under the same lock, so a resuming client never sees an event twice or out of order.
//!
//! Lock order: the window, then the hub's locks (see [`super::hub`]).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::hub::{Hub, Outbound, Registration, SessionLimit};
use crate::auth::revoked::Blacklist;
use crate::auth::token::TokenCodec;
use crate::events::CloudEvent;
use crate::events::frame::Frame;
use crate::metrics::{Metrics, Transport};
use crate::replay::window::HTTP_STREAM_PREFIX;
use crate::replay::{Frontier, Window};
use crate::subscriptions::{self, ConnId, Subscription};

use super::feed::Replaying;

/// How long a resuming client may wait for the partitions its token names to be assigned (right
/// after a restart, while the consumer starts and reads their recent history back).
const STREAMS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The topics the event consumer reads (RIG's `KAFKA_SOURCE_TOPICS` plus the EventRoutes'), when
/// Kafka is configured: a resuming client waits for the partitions its token names.
#[derive(Debug)]
pub struct HistorySource {
    /// The topics, as of now.
    pub topics: watch::Receiver<Vec<String>>,
}

/// What the fan-out needs to know (from `Config`, read by the wiring).
#[derive(Debug)]
pub struct Settings {
    /// This process's name in connection tokens.
    pub owner: String,
    /// `RIG_CONNECTION_QUEUE`.
    pub queue_capacity: usize,
    /// `RIG_REPLAY_WINDOW`.
    pub replay_window: usize,
    /// `RIG_CLOSE_AT_TOKEN_EXPIRY`.
    pub close_at_token_expiry: bool,
    /// Kafka, when configured: history for resumes.
    pub history: Option<HistorySource>,
}

/// The fan-out (module docs).
#[derive(Debug)]
pub struct Fanout {
    hub: Arc<Hub>,
    window: Arc<Mutex<Window>>,
    tokens: TokenCodec,
    owner: String,
    metrics: Arc<Metrics>,
    revoked: Arc<Blacklist>,
    http_stream: Arc<str>,
    http_seq: AtomicI64,
    streams_started: watch::Sender<u64>,
    history: Option<HistorySource>,
    close_at_token_expiry: bool,
}

impl Fanout {
    /// The fan-out with `extractors`, minting tokens with `tokens`; a connection joining a session
    /// `revoked` lists is closed at once.
    pub fn new(
        settings: Settings,
        extractors: Arc<crate::subscriptions::Extractors>,
        tokens: TokenCodec,
        revoked: Arc<Blacklist>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            hub: Arc::new(Hub::new(
                extractors,
                settings.queue_capacity,
                metrics.clone(),
            )),
            window: Arc::new(Mutex::new(Window::new(
                settings.replay_window,
                tokens.clone(),
            ))),
            tokens,
            http_stream: Arc::from(format!(
                "{HTTP_STREAM_PREFIX}{}.{:08x}",
                settings.owner,
                crate::support::random_u32()
            )),
            owner: settings.owner,
            metrics,
            revoked,
            http_seq: AtomicI64::new(0),
            streams_started: watch::Sender::new(0),
            history: settings.history,
            close_at_token_expiry: settings.close_at_token_expiry,
        }
    }

    /// The open connections and their subscription index.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The connection token codec.
    pub fn tokens(&self) -> &TokenCodec {
        &self.tokens
    }

    /// This process's name in connection tokens.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Whether `token` is a resume token this process (or a pod sharing its key) handed out.
    pub fn is_resume_token(&self, token: &str) -> bool {
        Frontier::decode_signed(token, &self.tokens).is_some()
    }

    /// The resume token right after the retained event whose CloudEvent `id` is `id`, if any
    /// (WebSocket and long-polling clients resume with an event id).
    pub fn token_after_event(&self, id: &str) -> Option<String> {
        self.lock_window().token_after_event(id)
    }

    /// Add connection `id` to `sessions`, refusing beyond `limit` connections per session. A
    /// session revoked since its token was verified is killed right away (the revocation may
    /// have looked for its connections before this one joined), so no connection outlives a
    /// revocation. `Ok(false)` when the connection is gone.
    pub fn join_sessions(
        &self,
        id: ConnId,
        sessions: &[Arc<str>],
        limit: Option<usize>,
    ) -> Result<bool, SessionLimit> {
        let joined = self.hub.join_sessions(id, sessions, limit)?;
        for session in sessions {
            if self.revoked.is_revoked(session) {
                self.kill_session(session);
            }
        }
        Ok(joined)
    }

    /// With `RIG_CLOSE_AT_TOKEN_EXPIRY`, close connection `id` when the token whose `exp` (seconds
    /// since the Unix epoch) is given stops being accepted, unless a token it presented before
    /// lasts longer ([`super::expiry`]). Does nothing when the setting is off or `exp` is
    /// `None`; `false` only when the connection is gone.
    pub fn expire_with_token(&self, id: ConnId, exp: Option<u64>) -> bool {
        let Some(exp) = exp.filter(|_| self.close_at_token_expiry) else {
            return true;
        };
        match crate::connections::expiry::deadline(
            exp,
            crate::auth::jwt::LEEWAY_SECS,
            std::time::SystemTime::now(),
            tokio::time::Instant::now(),
        ) {
            Some(deadline) => self.hub.extend_expiry(id, deadline),
            // Beyond any representable instant: the token outlives this process.
            None => true,
        }
    }

    /// Close every connection of `session` in this process: SSE and long-polling get
    /// `rig.session_killed`, WebSocket close 1000 `Session killed.`. Counted in
    /// `rig_sessions_killed_total`; returns how many were closed.
    pub fn kill_session(&self, session: &str) -> usize {
        let event = CloudEvent::new_rig(super::SESSION_KILLED, serde_json::Value::Null);
        let frame = Arc::new(Frame::new(&event, None));
        let killed = self.hub.kill_session(session, &frame);
        if killed > 0 {
            self.metrics
                .sessions_killed
                .fetch_add(killed as u64, Ordering::Relaxed);
            tracing::info!(
                session,
                connections = killed,
                "revoked session: its connections were closed"
            );
        }
        killed
    }

    /// Forward an event accepted over HTTP.
    pub fn publish(&self, event: CloudEvent) -> usize {
        let seq = self.http_seq.fetch_add(1, Ordering::Relaxed);
        let stream = self.http_stream.clone();
        self.publish_at(&stream, seq, event)
    }

    /// Forward an event read at `position` of `stream`, recording it for replay.
    pub fn publish_at(&self, stream: &Arc<str>, position: i64, event: CloudEvent) -> usize {
        let event = Arc::new(event);
        // The window lock also orders publication: frames reach every queue in window order, so
        // a replay never reorders what a live client saw.
        let mut window = self.lock_window();
        let frame = window.push(stream, position, event.clone());
        self.hub.publish(&event, &frame)
    }

    /// Start reading `streams` (newly assigned Kafka partitions), each at the given position,
    /// with `history`: events read back from before the live start of some of them (after a
    /// restart), recorded for resuming clients but not delivered live. One step under the
    /// window's lock, so a resuming client sees either none of it or all of it.
    pub fn start_streams(
        &self,
        streams: &[(Arc<str>, i64)],
        history: Vec<(Arc<str>, i64, Arc<CloudEvent>)>,
    ) {
        let mut window = self.lock_window();
        for (stream, position) in streams {
            window.start_stream(stream, *position);
        }
        for (stream, position, event) in history {
            window.push(&stream, position, event);
        }
        drop(window);
        self.streams_started.send_modify(|n| *n += 1);
    }

    /// Register a connection with its subscriptions and queue, atomically with respect to event
    /// publication: the greetings (`rig.connection.create`, `rig.subscriptions_set`), then — when
    /// the client resumes with `last_event_id` — `rig.connection.gap` if something may be missing
    /// and the missed matching events (pulled from the window as the client reads,
    /// [`super::feed`]), then live events. Returns the registration and the connection token.
    pub fn register(
        &self,
        transport: Transport,
        subs: &[Subscription],
        last_event_id: Option<&str>,
        traceparent: Option<&str>,
    ) -> (Registration, String) {
        // Holding the window lock keeps publishers out until the connection is in place.
        let window = self.lock_window();
        let resumed = last_event_id
            .map(|id| window.resume(Frontier::decode_signed(id, &self.tokens).as_ref()));
        let catching_up = resumed.as_ref().is_some_and(|(_, cursor)| cursor.is_some());
        let mut registration = self.hub.register(transport, subs, !catching_up);
        let token = self.tokens.encode(&self.owner, registration.id);
        let position = window.token();
        let create = CloudEvent::new_rig_traced(
            "rig.connection.create",
            serde_json::json!({ "connection_token": token }),
            traceparent,
        );
        let set = CloudEvent::new_rig_traced(
            "rig.subscriptions_set",
            subscriptions::to_json(subs),
            traceparent,
        );
        let mut frames = vec![
            Frame::new(&create, Some(&position)),
            Frame::new(&set, Some(&position)),
        ];
        if let Some((gap, cursor)) = resumed {
            if gap {
                self.metrics.replay_misses.fetch_add(1, Ordering::Relaxed);
                let gap = CloudEvent::new_rig(
                    super::GAP,
                    serde_json::json!({ "last_event_id": last_event_id }),
                );
                frames.push(Frame::new(&gap, Some(&position)));
            } else {
                self.metrics.replay_hits.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(cursor) = cursor {
                registration.rx.replay(Replaying {
                    id: registration.id,
                    cursor,
                    window: self.window.clone(),
                    hub: self.hub.clone(),
                });
            }
        }
        for frame in frames {
            // A new queue holds at least four items, so the greetings always fit.
            self.hub
                .send_to(registration.id, Outbound::Frame(Arc::new(frame)));
        }
        drop(window);
        (registration, token)
    }

    /// Replace the subscriptions of connection `id` and queue `rig.subscriptions_set` (with the new
    /// set) to it; `false` when the connection is not (or no longer) here. Atomic with respect to
    /// event publication: events published before get the old set's matches, events after the
    /// new set's, and they reach the queue after the `rig.subscriptions_set` frame.
    pub fn set_subscriptions(
        &self,
        id: ConnId,
        subs: &[Subscription],
        traceparent: Option<&str>,
    ) -> bool {
        let window = self.lock_window();
        if !self.hub.set_subscriptions(id, subs) {
            return false;
        }
        let set = CloudEvent::new_rig_traced(
            "rig.subscriptions_set",
            subscriptions::to_json(subs),
            traceparent,
        );
        let frame = Frame::new(&set, Some(&window.token()));
        let queued = self.hub.send_to(id, Outbound::Frame(Arc::new(frame)));
        drop(window);
        if !queued {
            // The set is in effect; only the notice is lost (the queue is full or just closed).
            self.metrics.queue_drops.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                connection = id,
                "cannot queue rig.subscriptions_set: the connection's queue is full or closed"
            );
        }
        true
    }

    /// For a client resuming from `last_event_id`: wait (bounded) until every partition of a
    /// consumed topic its token names is assigned, so that right after a restart its replay
    /// includes the history read back and its resume is not reported as a gap for nothing. Returns
    /// at once when Kafka is off or the token names no such partition.
    pub async fn await_streams(&self, last_event_id: Option<&str>) {
        let Some(source) = self.history.as_ref() else {
            return;
        };
        let Some(from) = last_event_id.and_then(|id| Frontier::decode_signed(id, &self.tokens))
        else {
            return;
        };
        let wanted: Vec<Arc<str>> = from
            .0
            .keys()
            .filter(|stream| !stream.starts_with(HTTP_STREAM_PREFIX))
            .filter(|stream| {
                stream
                    .rsplit_once('/')
                    .is_some_and(|(topic, _)| source.topics.borrow().iter().any(|t| t == topic))
            })
            .cloned()
            .collect();
        if wanted.is_empty() {
            return;
        }
        let mut started = self.streams_started.subscribe();
        let all_started = |_: &u64| {
            let window = self.lock_window();
            wanted.iter().all(|s| window.floor(s).is_some())
        };
        let _ = tokio::time::timeout(STREAMS_TIMEOUT, started.wait_for(all_started)).await;
    }

    fn lock_window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl crate::kafka::consumer::Sink for Fanout {
    fn start_streams(
        &self,
        streams: &[(Arc<str>, i64)],
        history: Vec<(Arc<str>, i64, Arc<CloudEvent>)>,
    ) {
        Fanout::start_streams(self, streams, history);
    }

    fn publish_at(&self, stream: &Arc<str>, position: i64, event: CloudEvent) {
        Fanout::publish_at(self, stream, position, event);
    }
}
