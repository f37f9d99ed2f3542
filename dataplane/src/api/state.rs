//! The wiring's view of the process: one handle per subsystem, built from `Config` in one
//! place ([`State::new`]). Subsystems never see this struct; each gets its own narrow handle
//! (the connection endpoints [`Connections`], the fan-out [`Fanout`], the proxy, the access
//! policy, JWT verification, the configuration status).

use std::sync::Arc;

use http::HeaderValue;

use crate::auth::access::AccessPolicy;
use crate::auth::jwt::Verifier;
use crate::auth::revoked::{Blacklist, Source};
use crate::auth::token::TokenCodec;
use crate::auth::{Claims, Jwt, JwtError};
use crate::config::Config;
use crate::connections::context::{self, Connections};
use crate::connections::fanout::{self, Fanout, HistorySource};
use crate::connections::hub::Hub;
use crate::connections::limit::RateLimiter;
use crate::connections::longpolling::sessions::Sessions;
use crate::events::CloudEvent;
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::sessions::Revocations;
use crate::subscriptions::Extractors;

/// Every subsystem of the process; one per process, behind an `Arc`.
#[derive(Debug)]
pub struct State {
    /// The process configuration.
    pub config: Arc<Config>,
    /// The process metrics.
    pub metrics: Arc<Metrics>,
    /// The fan-out: open connections, replay window, connection tokens.
    pub fanout: Arc<Fanout>,
    /// Open connections and the subscription index (the fan-out's).
    pub hub: Arc<Hub>,
    /// The connection endpoints' handle.
    pub connections: Arc<Connections>,
    /// JWT verification with revocation.
    pub jwt: Arc<Jwt>,
    /// Long-polling sessions: their buffers between polls.
    pub longpolling: Arc<Sessions>,
    /// This process's name in connection tokens.
    pub owner: String,
    /// `access-control-allow-origin`, validated once.
    pub cors: HeaderValue,
    /// Who may subscribe to and publish each event type.
    pub access: Arc<AccessPolicy>,
    /// The other processes, to which requests about their connections are forwarded.
    pub peers: Arc<Peers>,
    /// Revoked JWT sessions.
    pub blacklist: Arc<Blacklist>,
    /// Revoking sessions (refuse their tokens, close their connections).
    pub revocations: Arc<Revocations>,
    /// The reverse proxy: route table, upstream client, proxy metrics.
    pub proxy: Arc<crate::proxy::Proxy>,
    /// The configuration in effect as readiness and metrics see it (cluster mode: the operator
    /// snapshot version; see `cluster::snapshots`).
    pub config_status: Arc<crate::cluster::snapshots::Status>,
    /// Cluster mode: the apiserver client, set once at start (empty in standalone mode).
    pub kube: std::sync::OnceLock<crate::cluster::kube::Kube>,
    /// With Kafka: the producer of HTTP-published events, set once at start (empty without
    /// Kafka: HTTP-published events are then delivered by this process alone).
    pub publisher: std::sync::OnceLock<crate::kafka::publish::Publisher>,
}

impl State {
    /// State for `config` with the given extractors, JWT verifier and token codec; `topics` are
    /// the event topics consumed (for resume history).
    pub fn new(
        config: Config,
        extractors: Arc<Extractors>,
        verifier: Verifier,
        tokens: TokenCodec,
    ) -> Self {
        Self::with_topics(
            config,
            extractors,
            verifier,
            tokens,
            tokio::sync::watch::channel(Vec::new()).1,
        )
    }

    /// [`State::new`] with the receiver of the consumed topics.
    pub fn with_topics(
        config: Config,
        extractors: Arc<Extractors>,
        verifier: Verifier,
        tokens: TokenCodec,
        topics: tokio::sync::watch::Receiver<Vec<String>>,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        let blacklist = Arc::new(Blacklist::new(metrics.clone()));
        let jwt = Arc::new(Jwt::new(verifier, blacklist.clone()));
        let fanout = Arc::new(Fanout::new(
            fanout::Settings {
                owner: config.owner.clone(),
                queue_capacity: config.queue_capacity,
                replay_window: config.replay_window,
                close_at_token_expiry: config.close_at_token_expiry,
                history: config
                    .kafka_brokers
                    .is_some()
                    .then_some(HistorySource { topics }),
            },
            extractors,
            tokens,
            blacklist.clone(),
            metrics.clone(),
        ));
        let longpolling = Arc::new(Sessions::new(
            config.longpolling_buffer,
            config.longpolling_session_timeout,
            metrics.clone(),
        ));
        let cors = HeaderValue::from_str(&config.cors).unwrap_or(HeaderValue::from_static("*"));
        let access = Arc::new(AccessPolicy::new(
            config.subscription_check.clone(),
            config.submission_check.clone(),
            config.check_timeout,
            metrics.clone(),
        ));
        let peers = Arc::new(Peers::new(
            config.peers.clone(),
            config.peer_timeout,
            metrics.clone(),
        ));
        let connections = Arc::new(Connections {
            fanout: fanout.clone(),
            jwt: jwt.clone(),
            access: access.clone(),
            longpolling: longpolling.clone(),
            connection_limiter: RateLimiter::per_minute(
                config.max_connections_per_minute,
                config.max_connections_per_minute_per_client,
            ),
            peers: peers.clone(),
            cors: cors.clone(),
            settings: context::Settings {
                max_body_bytes: config.max_body_bytes,
                longpolling_hold: config.longpolling_hold,
                max_connections_per_session: config.max_connections_per_session,
                head_timeout: config.head_timeout,
                body_idle_timeout: config.body_idle_timeout,
                client_ip_header: config.client_ip_header.clone(),
            },
            metrics: metrics.clone(),
        });
        let proxy = Arc::new(crate::proxy::Proxy::new(
            crate::proxy::Settings {
                owner: config.owner.clone(),
                inbound: config.inbound,
                inbound_https: config.https.as_ref().map(|h| h.inbound),
                kafka_response_timeout: config.proxy_kafka_response_timeout,
                http_async_response_timeout: config.proxy_http_async_response_timeout,
                cluster_mode: config.cluster_mode(),
                use_env: config.use_env.clone(),
                head_timeout: config.head_timeout,
                body_idle_timeout: config.proxy_body_idle_timeout,
                api_body_idle_timeout: config.body_idle_timeout,
                request_log: config.request_log.clone(),
            },
            jwt.clone(),
            peers.clone(),
            config.proxy_max_body_bytes,
            config.proxy_recv_timeout,
            &config.host,
            cors.clone(),
            crate::proxy::http::Upstream::new(&config.proxy_tls_ca, config.proxy_body_idle_timeout),
        ));
        Self {
            revocations: Arc::new(Revocations::new(blacklist.clone(), fanout.clone())),
            hub: fanout.hub().clone(),
            fanout,
            connections,
            jwt,
            blacklist,
            proxy,
            config_status: Arc::new(crate::cluster::snapshots::Status::new(
                config.cluster_mode(),
            )),
            kube: std::sync::OnceLock::new(),
            publisher: std::sync::OnceLock::new(),
            metrics,
            longpolling,
            owner: config.owner.clone(),
            cors,
            access,
            peers,
            config: Arc::new(config),
        }
    }

    /// The subsystems a configuration is installed into, with the sender of the consumed topics.
    pub fn targets(
        &self,
        topics: tokio::sync::watch::Sender<Vec<String>>,
    ) -> crate::routes::Targets {
        crate::routes::Targets {
            proxy: self.proxy.clone(),
            access: self.access.clone(),
            hub: self.hub.clone(),
            revocations: self.revocations.clone(),
            topics,
        }
    }

    /// The JWT verifier.
    pub fn verifier(&self) -> &Verifier {
        self.jwt.verifier()
    }

    /// Verify an end-user JWT, refusing revoked sessions ([`Jwt::verify`]).
    pub fn verify_jwt(&self, token: &str) -> Result<Claims, JwtError> {
        self.jwt.verify(token)
    }

    /// Revoke `session` until `until` and close its connections ([`Revocations::revoke`]).
    pub fn revoke(&self, session: &str, until: tokio::time::Instant, source: Source) -> usize {
        self.revocations.revoke(session, until, source)
    }

    /// Close every connection of `session` in this process ([`Fanout::kill_session`]).
    pub fn kill_session(&self, session: &str) -> usize {
        self.fanout.kill_session(session)
    }

    /// Forward an event accepted over HTTP ([`Fanout::publish`]).
    pub fn publish(&self, event: CloudEvent) -> usize {
        self.fanout.publish(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::JwtConfig;
    use crate::connections::hub::Outbound;
    use crate::metrics::Transport;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use std::sync::atomic::Ordering;

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
        assert_eq!(state.jwt.session_of(&claims).as_deref(), Some("x"));
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
        let (mut x, _) = state.fanout.register(Transport::Sse, &[], None, None);
        let (y, _) = state.fanout.register(Transport::Sse, &[], None, None);
        assert_eq!(
            state.fanout.join_sessions(x.id, &[Arc::from("x")], None),
            Ok(true)
        );
        assert_eq!(
            state.fanout.join_sessions(y.id, &[Arc::from("y")], None),
            Ok(true)
        );
        assert_eq!(state.revoke("x", until(60), Source::Api), 1);
        let mut last = None;
        while let Some(item) = x.rx.recv().await {
            last = Some(item);
        }
        assert!(
            matches!(&last, Some(Outbound::Close(Some(f))) if f.event_type == crate::sessions::SESSION_KILLED),
            "{last:?}"
        );
        assert!(state.hub.contains(y.id));
        assert_eq!(state.metrics.sessions_killed.load(Ordering::Relaxed), 1);

        // A connection whose token was verified before the revocation, joining after it.
        let (mut late, _) = state.fanout.register(Transport::Ws, &[], None, None);
        assert_eq!(
            state.fanout.join_sessions(late.id, &[Arc::from("x")], None),
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
        let (mut m, _) = state.fanout.register(Transport::Sse, &[], None, None);
        assert_eq!(
            state.fanout.join_sessions(m.id, &[Arc::from("m")], None),
            Ok(true)
        );
        state.revocations.apply_manifest_blacklists(&[
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
        state.revocations.apply_manifest_blacklists(&[]);
        assert!(
            state.verify_jwt(&token("m")).is_ok(),
            "removed object, lifted"
        );
        assert!(state.blacklist.is_empty());
    }
}
