//! The state shared by both listeners and the event sources.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use http::HeaderValue;

use crate::auth::access::AccessPolicy;
use crate::auth::jwt::{Claims, JwtError, Verifier};
use crate::auth::token::TokenCodec;
use crate::config::Config;
use crate::connections::frame::Frame;
use crate::connections::hub::{Hub, Outbound, Registration, SessionLimit};
use crate::connections::limit::RateLimiter;
use crate::connections::longpolling::sessions::Sessions;
use crate::events::CloudEvent;
use crate::kafka::history::{self, Fetched, Range};
use crate::metrics::{Metrics, Transport};
use crate::peers::Peers;
use crate::replay::window::HTTP_STREAM_PREFIX;
use crate::sessions::{self, Blacklist, Source};

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
    /// Who may subscribe to and publish each event type (`SUBSCRIPTION_CHECK`,
    /// `SUBMISSION_CHECK`, and the `EventRoute`s' checks).
    pub access: AccessPolicy,
    /// The other processes, to which requests about their connections are forwarded.
    pub peers: Peers,
    /// Revoked JWT sessions.
    pub blacklist: Arc<Blacklist>,
    /// The reverse proxy: route table, upstream client, proxy metrics.
    pub proxy: crate::proxy::Proxy,
    /// The configuration in effect as readiness and metrics see it (cluster mode: the operator
    /// snapshot version; see `cluster::snapshots`).
    pub config_status: crate::cluster::snapshots::Status,
    /// Cluster mode: the apiserver client, set once at start (empty in standalone mode).
    pub kube: std::sync::OnceLock<crate::cluster::kube::Kube>,
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
        let access = AccessPolicy::new(
            config.subscription_check.clone(),
            config.submission_check.clone(),
            config.check_timeout,
            metrics.clone(),
        );
        let peers = Peers::new(config.peers.clone(), config.peer_timeout, metrics.clone());
        let blacklist = Arc::new(Blacklist::new(metrics.clone()));
        let proxy = crate::proxy::Proxy::new(
            config.proxy_max_body_bytes,
            config.proxy_recv_timeout,
            &config.host,
            cors.clone(),
            crate::proxy::http::Upstream::new(&config.proxy_tls_ca, config.proxy_body_idle_timeout),
        );
        Self {
            blacklist,
            proxy,
            config_status: crate::cluster::snapshots::Status::new(config.cluster_mode()),
            kube: std::sync::OnceLock::new(),
            metrics,
            hub,
            longpolling,
            window: Mutex::new(Window::new(config.replay_window)),
            verifier,
            tokens,
            owner: config.owner.clone(),
            connection_limiter: RateLimiter::per_minute(config.max_connections_per_minute),
            cors,
            access,
            peers,
            http_stream: Arc::from(format!("{HTTP_STREAM_PREFIX}{}", config.owner)),
            http_seq: AtomicI64::new(0),
            streams_started: tokio::sync::watch::Sender::new(0),
            config,
        }
    }

    /// Verify a raw JWT (signature, expiry, algorithm) and refuse it when its session is revoked
    /// ([`JwtError::Revoked`]). Every use of end-user JWTs goes through here.
    pub fn verify_jwt(&self, token: &str) -> Result<Claims, JwtError> {
        let claims = self.verifier.verify(token)?;
        if let Some(session) = self.verifier.session_id(&claims)
            && self.blacklist.is_revoked(&session)
        {
            let error = JwtError::Revoked { session };
            self.verifier.record_refusal(&error);
            return Err(error);
        }
        Ok(claims)
    }

    /// The session of verified `claims` (the claim at `JWT_SESSION_FIELD`), if it has one.
    pub fn session_of(&self, claims: &Claims) -> Option<Arc<str>> {
        self.verifier.session_id(claims).map(Arc::from)
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
            if self.blacklist.is_revoked(session) {
                self.kill_session(session);
            }
        }
        Ok(joined)
    }

    /// With `RIG_CLOSE_AT_TOKEN_EXPIRY`, close connection `id` when the token whose `exp` (seconds
    /// since the Unix epoch) is given stops being accepted, unless a token it presented before
    /// lasts longer ([`sessions::expiry`]). Does nothing when the setting is off or `exp` is
    /// `None`; `false` only when the connection is gone.
    pub fn expire_with_token(&self, id: ConnId, exp: Option<u64>) -> bool {
        let Some(exp) = exp.filter(|_| self.config.close_at_token_expiry) else {
            return true;
        };
        match sessions::expiry::deadline(
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

    /// Revoke `session` until `until` and close its connections in this process; returns how
    /// many were closed.
    pub fn revoke(&self, session: &str, until: tokio::time::Instant, source: Source) -> usize {
        let newly = self.blacklist.revoke(session, until, source);
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        tracing::info!(
            session,
            ?source,
            newly,
            validity_secs = left.as_secs(),
            "session revoked"
        );
        self.kill_session(session)
    }

    /// Close every connection of `session` in this process: SSE and long-polling get
    /// `rig.session_killed`, WebSocket close 1000 `Session killed.`. Counted in
    /// `rig_sessions_killed_total`; returns how many were closed.
    pub fn kill_session(&self, session: &str) -> usize {
        let event = CloudEvent::new_rig(sessions::SESSION_KILLED, serde_json::json!({}));
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

    /// Make `entries` (session id, end of the revocation) the complete set of revocations from
    /// `Blacklist` objects, and close the connections of every session they revoke. Entries
    /// already expired are skipped; a session no longer listed stops being revoked unless the API
    /// revoked it too. The wall-clock end is converted to the monotonic clock once, here.
    pub fn apply_manifest_blacklists(&self, entries: &[(String, std::time::SystemTime)]) {
        let wall = std::time::SystemTime::now();
        let now = tokio::time::Instant::now();
        let active: Vec<(Arc<str>, tokio::time::Instant)> = entries
            .iter()
            .filter_map(|(session, expires)| {
                let left = expires.duration_since(wall).ok()?;
                let left = left.min(sessions::api::MAX_VALIDITY);
                Some((Arc::from(session.as_str()), now + left))
            })
            .collect();
        self.blacklist.replace_manifest(&active);
        tracing::info!(
            listed = entries.len(),
            active = active.len(),
            "Blacklist objects applied"
        );
        for (session, _) in &active {
            self.kill_session(session);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::JwtConfig;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    const SECRET: &[u8] = b"state-test-secret";

    fn state() -> State {
        let config = Config::from_lookup(|_| None).expect("defaults");
        let jwt = JwtConfig {
            algorithms: vec![Algorithm::HS256],
            key: Some(SECRET.to_vec()),
            ..JwtConfig::default()
        };
        State::new(
            config,
            Arc::new(Extractors::new()),
            jwt.verifier().expect("verifier"),
            TokenCodec::new(b"0123456789abcdef0123456789abcdef"),
        )
    }

    fn token(jti: &str) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 3600;
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"jti": jti, "exp": exp}),
            &EncodingKey::from_secret(SECRET),
        )
        .expect("sign")
    }

    fn until(secs: u64) -> tokio::time::Instant {
        tokio::time::Instant::now() + std::time::Duration::from_secs(secs)
    }

    #[tokio::test]
    async fn a_revoked_sessions_tokens_are_refused_with_rigs_text() {
        let state = state();
        let claims = state.verify_jwt(&token("x")).expect("valid before");
        assert_eq!(state.session_of(&claims).as_deref(), Some("x"));
        state.revoke("x", until(60), Source::Api);
        let err = state.verify_jwt(&token("x")).expect_err("revoked");
        assert!(matches!(&err, JwtError::Revoked { session } if session == "x"));
        assert_eq!(
            err.to_string(),
            "could not decode JWT: Ignoring blacklisted JWT with ID \"x\"."
        );
        assert!(
            state.verify_jwt(&token("y")).is_ok(),
            "other sessions unaffected"
        );
    }

    #[tokio::test]
    async fn revoking_kills_live_connections_and_a_late_joiner_is_killed_on_joining() {
        let state = state();
        let (mut x, _) = state.register(Transport::Sse, &[], None, None);
        let (y, _) = state.register(Transport::Sse, &[], None, None);
        assert_eq!(state.join_sessions(x.id, &[Arc::from("x")], None), Ok(true));
        assert_eq!(state.join_sessions(y.id, &[Arc::from("y")], None), Ok(true));
        assert_eq!(state.revoke("x", until(60), Source::Api), 1);
        let mut last = None;
        while let Some(item) = x.rx.recv().await {
            last = Some(item);
        }
        assert!(
            matches!(&last, Some(Outbound::Close(Some(f))) if f.event_type == sessions::SESSION_KILLED),
            "{last:?}"
        );
        assert!(state.hub.contains(y.id));
        assert_eq!(state.metrics.sessions_killed.load(Ordering::Relaxed), 1);

        // A connection whose token was verified before the revocation, joining after it.
        let (mut late, _) = state.register(Transport::Ws, &[], None, None);
        assert_eq!(
            state.join_sessions(late.id, &[Arc::from("x")], None),
            Ok(true)
        );
        assert!(!state.hub.contains(late.id), "killed on joining");
        let mut last = None;
        while let Some(item) = late.rx.recv().await {
            last = Some(item);
        }
        assert!(matches!(last, Some(Outbound::Close(Some(_)))), "{last:?}");
    }

    #[tokio::test]
    async fn manifest_revocations_apply_and_lift_when_removed() {
        let state = state();
        let now = std::time::SystemTime::now();
        let hour = std::time::Duration::from_secs(3600);
        let (mut m, _) = state.register(Transport::Sse, &[], None, None);
        assert_eq!(state.join_sessions(m.id, &[Arc::from("m")], None), Ok(true));
        state.apply_manifest_blacklists(&[
            ("m".to_owned(), now + hour),
            ("old".to_owned(), now - hour),
        ]);
        assert!(state.verify_jwt(&token("m")).is_err());
        assert!(
            state.verify_jwt(&token("old")).is_ok(),
            "expired entries are skipped"
        );
        assert_eq!(state.blacklist.len(), 1);
        assert!(!state.hub.contains(m.id), "the live connection was closed");
        while m.rx.recv().await.is_some() {}
        state.apply_manifest_blacklists(&[]);
        assert!(
            state.verify_jwt(&token("m")).is_ok(),
            "removed object, lifted"
        );
        assert!(state.blacklist.is_empty());
    }
}
