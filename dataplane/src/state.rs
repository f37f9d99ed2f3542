//! The state shared by both listeners and the event sources.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use http::HeaderValue;

use crate::auth::check::{Check, CheckKind};
use crate::auth::jwt::{Claims, JwtError, Verifier};
use crate::auth::token::TokenCodec;
use crate::config::Config;
use crate::connections::frame::Frame;
use crate::connections::hub::{Hub, Outbound, Registration};
use crate::connections::limit::RateLimiter;
use crate::connections::longpolling::sessions::Sessions;
use crate::events::CloudEvent;
use crate::kafka::history::{self, Fetched, Range};
use crate::metrics::{Metrics, Transport};
use crate::peers::Peers;
use crate::replay::window::HTTP_STREAM_PREFIX;

/// How long a resuming client may wait for Kafka history (partition assignment plus reading).
const HISTORY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
use crate::replay::{Frontier, Window};
use crate::subscriptions::{self, ConnId, Extractors, Index, Subscription};

/// Everything a handler may need; one per process, behind an `Arc`.
#[derive(Debug)]
pub struct State {
    /// The process configuration.
    pub config: Config,
    /// The process metrics.
    pub metrics: Arc<Metrics>,
    /// Open connections and the subscription index.
    pub hub: Arc<Hub>,
    /// Long-polling sessions: their buffers between polls.
    pub longpolling: Arc<Sessions>,
    /// Recently forwarded events, for lossless reconnect.
    pub window: Mutex<Window>,
    /// JWT verification (without a configured key every token is refused).
    pub verifier: Verifier,
    /// Connection tokens.
    pub tokens: TokenCodec,
    /// This process's name in connection tokens.
    pub owner: String,
    /// `MAX_CONNECTIONS_PER_MINUTE`.
    pub connection_limiter: RateLimiter,
    /// `access-control-allow-origin`, validated once.
    pub cors: HeaderValue,
    /// `SUBSCRIPTION_CHECK`: connecting with subscriptions, replacing subscriptions.
    pub subscription_check: Check,
    /// `SUBMISSION_CHECK`: `POST /_rig/v1/events`.
    pub submission_check: Check,
    /// The other processes, to which requests about their connections are forwarded.
    pub peers: Peers,
    http_stream: Arc<str>,
    http_seq: AtomicI64,
    streams_started: tokio::sync::watch::Sender<u64>,
}

impl State {
    /// State for `config` with the given extractors, JWT verifier and token codec.
    pub fn new(
        config: Config,
        extractors: Arc<Extractors>,
        verifier: Verifier,
        tokens: TokenCodec,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(extractors, config.queue_capacity, metrics.clone()));
        let longpolling = Arc::new(Sessions::new(
            config.longpolling_buffer,
            config.longpolling_session_timeout,
            metrics.clone(),
        ));
        let cors = HeaderValue::from_str(&config.cors).unwrap_or(HeaderValue::from_static("*"));
        let subscription_check = Check::new(
            CheckKind::Subscription,
            config.subscription_check.clone(),
            config.check_timeout,
            metrics.clone(),
        );
        let submission_check = Check::new(
            CheckKind::Submission,
            config.submission_check.clone(),
            config.check_timeout,
            metrics.clone(),
        );
        let peers = Peers::new(config.peers.clone(), config.peer_timeout, metrics.clone());
        Self {
            metrics,
            hub,
            longpolling,
            window: Mutex::new(Window::new(config.replay_window)),
            verifier,
            tokens,
            owner: config.owner.clone(),
            connection_limiter: RateLimiter::per_minute(config.max_connections_per_minute),
            cors,
            subscription_check,
            submission_check,
            peers,
            http_stream: Arc::from(format!("{HTTP_STREAM_PREFIX}{}", config.owner)),
            http_seq: AtomicI64::new(0),
            streams_started: tokio::sync::watch::Sender::new(0),
            config,
        }
    }

    /// Verify a raw JWT (signature, expiry, algorithm).
    pub fn verify_jwt(&self, token: &str) -> Result<Claims, JwtError> {
        self.verifier.verify(token)
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
        let token = window.push(stream, position, event.clone());
        self.hub.publish(&event, Some(&token))
    }

    /// Register a connection with its subscriptions and queue, atomically with respect to event
    /// publication: the greetings (`rig.connection.create`, `rig.subscriptions_set`), then — when
    /// the client resumes with `last_event_id` — `rig.connection.gap` if something may be missing
    /// and the missed matching events, then live events. Returns the registration and the
    /// connection token.
    pub fn register(
        &self,
        transport: Transport,
        subs: &[Subscription],
        last_event_id: Option<&str>,
        history: Option<&Fetched>,
    ) -> (Registration, String) {
        // Holding the window lock keeps publishers out until the queue holds the replay.
        let window = self.lock_window();
        let replay = last_event_id.map(|id| window.replay(Frontier::decode(id).as_ref(), history));
        let replay_len = replay.as_ref().map_or(0, |r| r.events.len() + 1);
        let registration = self.hub.register(transport, subs, replay_len);
        let token = self.tokens.encode(&self.owner, registration.id);
        let position = window.token();
        let create = CloudEvent::new_rig(
            "rig.connection.create",
            serde_json::json!({ "connection_token": token }),
        );
        let set = CloudEvent::new_rig("rig.subscriptions_set", subscriptions::to_json(subs));
        let mut frames = vec![
            Frame::new(&create, Some(&position)),
            Frame::new(&set, Some(&position)),
        ];
        if let Some(replay) = replay {
            if replay.gap {
                self.metrics.replay_misses.fetch_add(1, Ordering::Relaxed);
                let gap = CloudEvent::new_rig(
                    "rig.connection.gap",
                    serde_json::json!({ "last_event_id": last_event_id }),
                );
                frames.push(Frame::new(&gap, Some(&position)));
            } else {
                self.metrics.replay_hits.fetch_add(1, Ordering::Relaxed);
            }
            let matcher = Index::new(self.hub.extractors());
            matcher.set(0, subs);
            let mut hit = Vec::with_capacity(1);
            for (event, id) in &replay.events {
                hit.clear();
                matcher.matching(event, &mut hit);
                if !hit.is_empty() {
                    frames.push(Frame::new(event, Some(id)));
                }
            }
        }
        for frame in frames {
            // The queue was sized for the greetings and the replay, so this cannot overflow.
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
    pub fn set_subscriptions(&self, id: ConnId, subs: &[Subscription]) -> bool {
        let window = self.lock_window();
        if !self.hub.set_subscriptions(id, subs) {
            return false;
        }
        let set = CloudEvent::new_rig("rig.subscriptions_set", subscriptions::to_json(subs));
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

    /// Note where this process starts reading `stream` (a newly assigned Kafka partition).
    pub fn start_stream(&self, stream: &Arc<str>, position: i64) {
        self.lock_window().start_stream(stream, position);
        self.streams_started.send_modify(|n| *n += 1);
    }

    /// For a client resuming from `last_event_id`: read from Kafka what it missed before the
    /// replay window (after a restart the window starts empty). `None` when nothing needs reading
    /// or Kafka is off; failures are logged and yield `None` (the client then gets a gap event).
    pub async fn kafka_history(&self, last_event_id: Option<&str>) -> Option<Fetched> {
        let brokers = self.config.kafka_brokers.as_deref()?;
        let from = Frontier::decode(last_event_id?)?;
        let wanted: Vec<(Arc<str>, String, i32, i64)> = from
            .0
            .iter()
            .filter(|(stream, _)| !stream.starts_with(HTTP_STREAM_PREFIX))
            .filter_map(|(stream, next)| {
                let (topic, partition) = stream.rsplit_once('/')?;
                let partition = partition.parse().ok()?;
                self.config
                    .kafka_source_topics
                    .iter()
                    .any(|t| t == topic)
                    .then(|| (stream.clone(), topic.to_owned(), partition, *next))
            })
            .collect();
        if wanted.is_empty() {
            return None;
        }
        // Right after a restart the consumer may not have assigned the partitions yet; their
        // start is where history must end, so wait for it (bounded).
        let mut started = self.streams_started.subscribe();
        let all_started = |_: &u64| {
            let window = self.lock_window();
            wanted.iter().all(|(s, ..)| window.floor(s).is_some())
        };
        let _ = tokio::time::timeout(HISTORY_TIMEOUT, started.wait_for(all_started)).await;
        let ranges: Vec<Range> = {
            let window = self.lock_window();
            wanted
                .into_iter()
                .filter_map(|(stream, topic, partition, from)| {
                    let to = window.floor(&stream)?;
                    (from < to).then_some(Range {
                        stream,
                        topic,
                        partition,
                        from,
                        to,
                    })
                })
                .collect()
        };
        if ranges.is_empty() {
            return None;
        }
        let max = self.config.replay_window.max(1);
        match history::fetch(brokers, ranges, max, HISTORY_TIMEOUT).await {
            Ok(fetched) => Some(fetched),
            Err(error) => {
                tracing::warn!(%error, "cannot read Kafka history for a resuming client");
                None
            }
        }
    }

    fn lock_window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
